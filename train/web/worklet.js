// The microphone's samples -> little-endian 16-bit PCM blocks posted to the page (which sends them to
// the server). Runs in the AudioWorklet thread: 128 frames per call, sent on every BLOCK frames.
const BLOCK = 2048;

class PcmSender extends AudioWorkletProcessor {
  constructor() {
    super();
    this.buffer = new Int16Array(BLOCK);
    this.filled = 0;
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (channel) {
      for (let i = 0; i < channel.length; i++) {
        const s = Math.max(-1, Math.min(1, channel[i]));
        this.buffer[this.filled++] = s < 0 ? Math.round(s * 32768) : Math.round(s * 32767);
        if (this.filled === BLOCK) {
          this.port.postMessage(this.buffer.buffer, [this.buffer.buffer]);
          this.buffer = new Int16Array(BLOCK);
          this.filled = 0;
        }
      }
    }
    return true;
  }
}

registerProcessor("pcm-sender", PcmSender);
