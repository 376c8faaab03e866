"""train.report: a real (tiny) trained model -> static HTML report, checked in headless Chromium.

The model and its images are the session's synthetic ones (conftest: speech_images, speech_model).

The browser test drives Debian's chromium over the DevTools protocol on a pipe
(--remote-debugging-pipe: JSON messages separated by NUL on fds 3 and 4), so it needs no extra
Python package and no network port.
"""
from __future__ import annotations

import base64
import fcntl
import html.parser
import json
import os
import queue
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from train import report
from train.metrics import f1_score

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


# ---------------------------------------------------------------- fixtures: the session's images and model

@pytest.fixture(scope="module")
def tiny_images(speech_images) -> Path:
    """The session's synthetic images (conftest): `python -m preprocess` on eSpeak clips plus one
    broken clip, which the manifest records as failed."""
    return speech_images


@pytest.fixture(scope="module")
def tiny_model(speech_model) -> Path:
    """models/tiny: the session's `python -m train` run on tiny_images (a real, if poor, model)."""
    return speech_model


@pytest.fixture(scope="module")
def built_report(tiny_model, tmp_path_factory) -> Path:
    """The report, with pages of 2 cards so the pager is exercised."""
    out = tmp_path_factory.mktemp("report_out") / "report"
    assert report.main([str(tiny_model), "--out", str(out), "--page-size", "2", "--per-class", "3"]) == 0
    return out


def _metrics(model_dir: Path) -> dict:
    return json.loads((model_dir / "metrics.json").read_text())


# ---------------------------------------------------------------- HTML5 structure

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class StructureChecker(html.parser.HTMLParser):
    """Doctype, lang, charset, title, balanced tags, unique ids, alt on img, local links only."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.doctype, self.stack, self.problems = None, [], []
        self.ids, self.links, self.tags = set(), [], []
        self.html_lang = self.charset = None

    def handle_decl(self, decl):
        self.doctype = decl

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag == "html":
            self.html_lang = attrs.get("lang")
        if tag == "meta" and "charset" in attrs:
            self.charset = attrs["charset"]
        if "id" in attrs:
            if attrs["id"] in self.ids:
                self.problems.append(f"duplicate id {attrs['id']!r}")
            self.ids.add(attrs["id"])
        if tag == "img" and not attrs.get("alt"):
            self.problems.append(f"img without alt: {attrs}")
        for key in ("src", "href"):
            if key in attrs:
                self.links.append((tag, attrs[key]))
        if tag not in VOID:
            self.stack.append((tag, self.getpos()))

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.stack.pop()

    def handle_endtag(self, tag):
        if tag in VOID:
            self.problems.append(f"end tag for void element {tag}")
        elif not self.stack or self.stack[-1][0] != tag:
            open_tag = self.stack[-1] if self.stack else "nothing"
            self.problems.append(f"</{tag}> at {self.getpos()} closes {open_tag}")
        else:
            self.stack.pop()


@pytest.mark.slow  # trains the session's tiny model
def test_report_html_is_valid_structure_with_local_links_only(built_report):
    page = (built_report / "index.html").read_text(encoding="utf-8")
    checker = StructureChecker()
    checker.feed(page)
    checker.close()
    assert checker.doctype and checker.doctype.lower() == "doctype html"
    assert page.startswith("<!DOCTYPE html>")
    assert checker.html_lang == "en" and checker.charset == "utf-8"
    assert [t for t, _ in checker.tags][:3] == ["html", "head", "meta"]  # charset first in head
    assert any(t == "title" for t, _ in checker.tags)
    assert checker.problems == []
    assert checker.stack == [], f"unclosed tags: {checker.stack}"
    for tag, url in checker.links:
        if url.startswith("#"):
            assert url[1:] in checker.ids, f"broken anchor {url}"
        elif url.startswith("data:"):
            continue
        else:
            assert "://" not in url and not url.startswith(("/", "\\")), f"non-relative link {url}"
            assert (built_report / url).is_file(), f"{tag} links to missing {url}"


@pytest.mark.slow  # trains the session's tiny model
def test_report_has_no_machine_paths_in_any_file(built_report, tiny_model):
    machine = [b"/work", b"/tmp", b"file://", str(Path.home()).encode(), str(tiny_model.parent).encode()]
    files = [p for p in built_report.rglob("*") if p.is_file()]
    assert len(files) > 5
    for path in files:
        data = path.read_bytes()
        for needle in machine:
            assert needle not in data, f"{path.relative_to(built_report)} contains {needle!r}"
    # and the temp folders used while building are gone
    assert [p.name for p in built_report.parent.iterdir()] == ["report"]


@pytest.mark.slow  # trains the session's tiny model
def test_report_content_matches_the_metrics(built_report, tiny_model, tiny_images):
    metrics = _metrics(tiny_model)
    page = (built_report / "index.html").read_text(encoding="utf-8")
    predictions = metrics["test_predictions"]
    errors = [p for p in predictions if p["predicted"] != p["label"]]
    assert errors, "the tiny model should make some mistakes"
    # one card per misclassified image, each with its PNG and its source clip copied in
    error_gallery = page.split('id="errors"')[1].split('id="correct"')[0]
    assert error_gallery.count('<figure class="card">') == len(errors)
    assert f"{len(errors)} of {len(predictions)} test images" in page
    for pred in errors:
        png = built_report / "img" / pred["png"]
        assert png.read_bytes() == (tiny_images / pred["png"]).read_bytes()
        clip = built_report / "audio" / Path(pred["png"]).with_suffix(".wav")
        assert clip.is_file() and clip.stat().st_size > 1000
        assert f'src="audio/{Path(pred["png"]).with_suffix(".wav").as_posix()}"' in error_gallery
    # dataset summary = manifest counts (rendered clips), the failed clip listed by its relative name
    manifest = (tiny_images / "manifest.csv").read_text().splitlines()[1:]
    assert f"<td>{sum(',ok,' in row for row in manifest)}</td></tr></tbody>" in page  # the "all / total" cell
    assert "1 clip(s) could not be rendered" in page
    assert '<td class="l">yes/broken_nohash_0.wav</td><td class="l">cannot decode audio' in page
    # the per-class test table = metrics
    for cls, numbers in metrics["test"]["per_class"].items():
        assert f"<td>{100 * numbers['recall']:.1f}%</td>" in page
        f1 = f1_score(numbers["precision"], numbers["recall"])
        assert f'<td class="l">{cls}</td><td>{100 * numbers["precision"]:.1f}%</td>' in page
        assert f"<td>{100 * f1:.1f}%</td><td>{numbers['support']}</td>" in page
    assert f"{100 * metrics['test']['accuracy']:.1f}%" in page
    assert 'loading="lazy"' in page and 'preload="none"' in page
    # correct samples: at most --per-class 3 per class
    correct = page.split('id="correct"')[1]
    assert 1 <= correct.count('<figure class="card">') <= 3 * len(metrics["classes"])


@pytest.mark.slow  # trains the session's tiny model
def test_report_curves_figure_is_a_real_plot(built_report, tiny_model):
    with Image.open(built_report / "curves.png") as figure:
        assert figure.size == (1000, 400)
        pixels = np.asarray(figure.convert("RGB"))
    assert pixels.std() > 20
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50  # lines, text, two legend colours


@pytest.mark.slow  # trains the session's tiny model
def test_report_caps_the_error_gallery_and_is_deterministic(tiny_model, tmp_path, capsys):
    errors = sum(p["predicted"] != p["label"] for p in _metrics(tiny_model)["test_predictions"])
    first, second = tmp_path / "a", tmp_path / "b"
    assert report.main([str(tiny_model), "--out", str(first), "--max-errors", "1"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(first / "index.html")
    assert report.main([str(tiny_model), "--out", str(second), "--max-errors", "1"]) == 0
    page = (first / "index.html").read_text()
    assert f"{errors} of" in page and "the 1 most confident shown" in page
    assert page.split('id="errors"')[1].split('id="correct"')[0].count('<figure class="card">') == 1
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    for rel in files:
        assert (first / rel).read_bytes() == (second / rel).read_bytes(), rel


@pytest.mark.slow  # trains the session's tiny model
def test_report_crash_leaves_the_previous_report_untouched(tiny_model, tmp_path, monkeypatch):
    out = tmp_path / "report"
    assert report.main([str(tiny_model), "--out", str(out)]) == 0
    before = (out / "index.html").read_bytes()

    def crash(*args, **kwargs):
        raise RuntimeError("simulated crash while drawing")

    monkeypatch.setattr(report, "plot_curves", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        report.main([str(tiny_model), "--out", str(out)])
    assert (out / "index.html").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["report"]  # no temp folder left behind


@pytest.mark.slow  # trains the session's tiny model
def test_report_refuses_to_replace_a_folder_that_is_not_a_report(tiny_model, tmp_path, capsys):
    precious = tmp_path / "notes"
    precious.mkdir()
    (precious / "thesis.txt").write_text("do not delete")
    assert report.main([str(tiny_model), "--out", str(precious)]) == 2
    assert "not a SpecVision report" in capsys.readouterr().err
    assert (precious / "thesis.txt").read_text() == "do not delete"


@pytest.mark.slow  # trains the session's tiny model
def test_report_bad_inputs_name_the_file(tiny_model, tmp_path, capsys):
    assert report.main([str(tmp_path / "nope"), "--out", str(tmp_path / "r")]) == 2
    assert "nope" in capsys.readouterr().err
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model, broken)
    (broken / "metrics.json").write_text("{not json")
    assert report.main([str(broken), "--out", str(tmp_path / "r")]) == 2
    assert "metrics.json: not readable JSON" in capsys.readouterr().err
    (broken / "model.pt").write_bytes(b"garbage")
    assert report.main([str(broken), "--out", str(tmp_path / "r")]) == 2
    assert "model.pt" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


@pytest.mark.slow  # trains the session's tiny model
def test_report_without_audio_root_still_renders(tiny_model, tiny_images, tmp_path, capsys):
    """Source clips moved away: the page says so instead of a broken player."""
    images = tmp_path / "images"
    shutil.copytree(tiny_images, images)
    render = json.loads((images / "render.json").read_text())
    render["source"]["root"] = str(tmp_path / "gone")
    (images / "render.json").write_text(json.dumps(render))
    assert report.main([str(tiny_model), "--out", str(tmp_path / "r"), "--images", str(images)]) == 0
    assert "without audio" in capsys.readouterr().out
    page = (tmp_path / "r" / "index.html").read_text()
    assert "audio not found" in page and "<audio" not in page


@pytest.mark.slow  # trains the session's tiny model
def test_report_escapes_what_the_data_folder_says(tiny_model, tiny_images, tmp_path):
    """Names and reasons come from files anyone can write (manifest.csv): shown as text, never as markup."""
    images = tmp_path / "images"
    shutil.copytree(tiny_images, images)
    with open(images / "manifest.csv", "a", encoding="utf-8") as handle:
        handle.write('yes/a&b<i>.wav,,train,yes,,failed,"<script>alert(1)</script> bad header",,,,,,,\n')
    assert report.main([str(tiny_model), "--out", str(tmp_path / "r"), "--images", str(images)]) == 0
    page = (tmp_path / "r" / "index.html").read_text()
    assert "2 clip(s) could not be rendered" in page
    assert '<td class="l">yes/a&amp;b&lt;i&gt;.wav</td><td class="l">&lt;script&gt;alert(1)&lt;/script&gt; bad' in page
    assert "<script>alert" not in page and "<i>" not in page


def test_f1_is_the_harmonic_mean_of_precision_and_recall():
    assert f1_score(0.5, 1.0) == pytest.approx(2 / 3)
    assert f1_score(0.0, 0.0) == 0.0 and f1_score(None, 0.5) is None


def test_scrub_removes_machine_directories():
    root = Path("/data/clips")
    assert report.scrub("/data/clips/yes/a.wav: bad header", root) == "yes/a.wav: bad header"
    assert report.scrub("/home/me/x/b.wav: empty file (0 bytes)", root) == "b.wav: empty file (0 bytes)"


# ---------------------------------------------------------------- the real browser

class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe (fds 3/4, NUL-separated JSON)."""

    FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--remote-debugging-pipe"]

    def __init__(self, executable: str, profile: Path):
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # move the child's ends above 9 so the redirections below cannot overwrite each other
        to_browser_r, from_browser_w = (self._high_fd(fd) for fd in (to_browser_r, from_browser_w))
        # bash puts our pipe ends on the fds Chromium expects: 3 = commands in, 4 = replies out
        # (bash, not sh: dash cannot redirect from fds above 9)
        command = ["bash", "-c", f'exec "$@" 3<&{to_browser_r} 4>&{from_browser_w}', "bash", executable,
                   *self.FLAGS, f"--user-data-dir={profile}", "about:blank"]
        self.process = subprocess.Popen(command, pass_fds=(to_browser_r, from_browser_w),
                                        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._messages: queue.Queue = queue.Queue()
        self.events: list[dict] = []
        self._next_id = 0
        threading.Thread(target=self._read, daemon=True).start()

    @staticmethod
    def _high_fd(fd: int) -> int:
        high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(fd)
        return high

    def _read(self):
        buffer = b""
        while chunk := os.read(self._from_browser, 1 << 16):
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            for message in messages:
                self._messages.put(json.loads(message))
        self._messages.put(None)

    def _next(self, deadline: float) -> dict:
        message = self._messages.get(timeout=max(0.01, deadline - time.monotonic()))
        if message is None:
            raise RuntimeError("chromium closed the DevTools pipe")
        if "id" not in message:
            self.events.append(message)
        return message

    def call(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 60):
        self._next_id += 1
        request = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            request["sessionId"] = session
        os.write(self._to_browser, json.dumps(request).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            message = self._next(deadline)
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]

    def console_errors(self) -> list[dict]:
        """Console errors, failed assertions, uncaught exceptions and error log entries seen so far."""
        return [e for e in self.events
                if (e["method"] == "Runtime.consoleAPICalled" and e["params"]["type"] in ("error", "assert"))
                or e["method"] == "Runtime.exceptionThrown"
                or (e["method"] == "Log.entryAdded" and e["params"]["entry"]["level"] == "error")]

    def wait_for(self, method: str, timeout: float = 60) -> dict:
        for event in self.events:
            if event["method"] == method:
                return event
        deadline = time.monotonic() + timeout
        while True:
            message = self._next(deadline)
            if message.get("method") == method:
                return message

    def close(self):
        try:
            os.close(self._to_browser)  # Chromium exits when its command pipe closes
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# Loads every image (lazy and paged-out ones too) and reads every clip's header, then reports.
CHECK_PAGE_JS = """
(async () => {
  const images = Array.from(document.images);
  images.forEach(img => { img.loading = "eager"; });
  await Promise.all(images.map(img => img.decode().catch(() => null)));
  const audios = Array.from(document.querySelectorAll("audio"));
  await Promise.all(audios.map(audio => new Promise(done => {
    const timer = setTimeout(done, 15000);
    const finish = () => { clearTimeout(timer); done(); };
    audio.addEventListener("loadedmetadata", finish, {once: true});
    audio.querySelectorAll("source").forEach(s => s.addEventListener("error", finish, {once: true}));
    audio.preload = "metadata";
    audio.load();
  })));
  return {
    images: images.map(img => [img.getAttribute("src"), img.naturalWidth, img.naturalHeight]),
    audio: audios.map(a => [a.querySelector("source").getAttribute("src"), a.duration]),
    title: document.title,
  };
})()
"""

# The error gallery shows one page of cards; "next" shows the next page.
PAGER_JS = """
(() => {
  const gallery = document.querySelector("[data-page-size]");
  const visible = () => Array.from(gallery.children).filter(c => !c.hidden)
                                                    .map(c => c.querySelector("figcaption").textContent);
  const first = visible();
  const next = Array.from(document.querySelectorAll(".pager button"))
                    .find(b => b.textContent.includes("next"));
  next.click();
  return {first: first, second: visible(), label: document.querySelector(".pager span").textContent};
})()
"""


def inspect_in_chromium(index: Path, profile: Path) -> dict:
    """Open `index` in headless Chromium: -> page check, pager check, console errors, screenshot PNG."""
    browser = Chromium(CHROMIUM, profile)
    try:
        target = browser.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            browser.call(f"{domain}.enable", session=session)
        browser.call("Emulation.setDeviceMetricsOverride",
                     {"width": 1280, "height": 1000, "deviceScaleFactor": 1, "mobile": False},
                     session=session)
        browser.call("Page.navigate", {"url": index.as_uri()}, session=session)
        browser.wait_for("Page.loadEventFired")

        def evaluate(expression, **options):
            params = {"expression": expression, "returnByValue": True, **options}
            reply = browser.call("Runtime.evaluate", params, session=session)
            return reply["result"].get("value")

        page = evaluate(CHECK_PAGE_JS, awaitPromise=True)
        screenshot = base64.b64decode(browser.call("Page.captureScreenshot", {"format": "png"},
                                                   session=session)["data"])
        pager = evaluate(PAGER_JS)
        time.sleep(0.5)  # let late console messages arrive
        evaluate("1")
    finally:
        browser.close()
    errors = browser.console_errors()
    return {"page": page, "pager": pager, "errors": errors, "screenshot": screenshot}


needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed "
                                    "(apt-get install chromium; .ci/run installs it)")


@pytest.mark.slow
@needs_chromium
def test_report_in_headless_chromium(built_report, tiny_model, tmp_path):
    seen = inspect_in_chromium(built_report / "index.html", tmp_path / "profile")
    result, pager = seen["page"], seen["pager"]

    assert result["title"] == "SpecVision report: tiny"
    broken = [src for src, width, _ in result["images"] if width == 0]
    assert result["images"] and broken == [], f"images that did not load: {broken}"
    assert any(src == "curves.png" for src, _, _ in result["images"])
    silent = [src for src, duration in result["audio"] if not duration or duration != duration]  # NaN: failed
    assert result["audio"] and silent == [], f"audio that Chromium cannot read: {silent}"
    assert all(abs(duration - 1.0) < 0.05 for _, duration in result["audio"])
    assert seen["errors"] == [], f"console errors: {seen['errors']}"

    screenshot = tmp_path / "screenshot.png"
    screenshot.write_bytes(seen["screenshot"])
    with Image.open(screenshot) as image:
        assert image.size == (1280, 1000)
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.std() > 20 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 100

    errors_total = sum(p["predicted"] != p["label"] for p in _metrics(tiny_model)["test_predictions"])
    assert len(pager["first"]) == min(2, errors_total)
    if errors_total > 2:
        assert pager["second"] and set(pager["first"]).isdisjoint(pager["second"])
        assert re.fullmatch(r"page 2 of \d+", pager["label"])


@pytest.mark.slow
@needs_chromium
def test_browser_check_catches_a_broken_image_and_a_script_error(built_report, tmp_path):
    """The browser test above can fail: a missing PNG and a throwing script are both seen."""
    sabotaged = tmp_path / "report"
    shutil.copytree(built_report, sabotaged)
    victim = next((sabotaged / "img").rglob("*.png"))
    victim.unlink()
    index = sabotaged / "index.html"
    index.write_text(index.read_text().replace("</body>", "<script>undefinedFunction();</script></body>"))
    seen = inspect_in_chromium(index, tmp_path / "profile")
    broken = [src for src, width, _ in seen["page"]["images"] if width == 0]
    assert broken == [victim.relative_to(sabotaged).as_posix()]
    kinds = {e["method"] for e in seen["errors"]}
    assert "Runtime.exceptionThrown" in kinds
    assert any("ERR_FILE_NOT_FOUND" in e["params"]["entry"].get("text", "")
               for e in seen["errors"] if e["method"] == "Log.entryAdded"), seen["errors"]


def test_large_pngs_get_a_thumbnail_and_keep_the_full_image(tmp_path):
    """Big renders (e.g. n_fft 1024) are shown as thumbnails that link to the exact PNG."""
    images, out = tmp_path / "images", tmp_path / "out"
    big = images / "test" / "yes" / "big.png"
    big.parent.mkdir(parents=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (513, 161), dtype=np.uint8)).save(big)
    inputs = report.Inputs("m", {}, {}, images, None, None, None)
    thumb, full, size = report.Assets(out, inputs).image("test/yes/big.png")
    assert full == "img/test/yes/big.png" and (out / full).read_bytes() == big.read_bytes()
    assert thumb == "thumb/test/yes/big.png" and max(size) == report.THUMB_MAX_PX
    with Image.open(out / thumb) as image:
        assert image.size == size
    assets = report.Assets(out, inputs)
    assert assets.image("test/yes/missing.png") == (None, None, (0, 0))
    assert assets.image("../images/test/yes/big.png") == (None, None, (0, 0))  # never outside the folders
    assert assets.missing_images == 2 and not (tmp_path / "images" / "img").exists()
