"""The README's screenshot of the live page (docs/listen_page.png):

    .venv/bin/python bench/listen_screenshot.py --model models/demo/model.pt --out docs/listen_page.png

`python -m train.serve` with the model, and headless Chromium (Debian's `chromium`) whose fake
microphone plays a few of the demo's synthetic words (data/demo_synth, made by `make demo`: the
clips the model is surest of, yes and no in turn, 1.5 s apart); the page is captured once it has
heard `--words` of them. Drives Chromium with the browser helper of tests/test_serve.py.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from preprocess.render import load_audio  # noqa: E402
from train.predict import Predictor  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=REPO / "models/demo/model.pt")
    parser.add_argument("--words-dir", type=Path, default=REPO / "data/demo_synth")
    parser.add_argument("--words", type=int, default=6)
    parser.add_argument("--out", type=Path, default=REPO / "docs/listen_page.png")
    args = parser.parse_args()
    from test_serve import Served, listen_in_chromium

    predictor = Predictor(args.model)
    rate = predictor.settings.sample_rate
    best = {}
    for label in ("yes", "no"):
        scored = []
        for path in sorted((args.words_dir / label).glob("*.wav"))[:150]:
            clip = load_audio(path, predictor.settings)
            answer = predictor.prediction(str(path), predictor.logits(predictor.audio_tensor(clip)[None])[0], 0, 1)
            if answer.label == label:
                scored.append((-answer.confidence, path.name, clip))
        best[label] = [clip for _, _, clip in sorted(scored, key=lambda x: x[:2])[:args.words]]
    rng = np.random.default_rng(0)
    pieces = [np.zeros(rate // 2, np.float32)]
    for k in range(args.words):
        pieces += [best[("yes", "no")[k % 2]][k // 2], np.zeros(int(1.5 * rate), np.float32)]
    wave = np.concatenate(pieces)
    wave += (rng.standard_normal(len(wave)) * 10 ** (-60 / 20)).astype(np.float32)
    with tempfile.TemporaryDirectory() as folder:
        microphone = Path(folder) / "microphone.wav"
        sf.write(microphone, wave, rate, subtype="PCM_16")
        server = Served(args.model)
        try:
            seen = listen_in_chromium(server.url, microphone, Path(folder) / "profile", args.words, timeout=120,
                                      screenshot_size=(1280, 720))
        finally:
            server.stop()
    args.out.write_bytes(seen["screenshot"])
    print(f"{args.out}: {len(seen['detections'])} words heard: {[d['label'] for d in seen['detections']]}; "
          f"console errors: {len(seen['errors'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
