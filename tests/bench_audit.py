"""Benchmark of the dataset audit page: build time, and load time in headless Chromium.

    python tests/bench_audit.py IMAGES [--out DIR] [--runs 3]

Builds `python -m preprocess.audit IMAGES --out DIR` (a separate process, timed from start to
exit), then opens DIR/index.html, a class's first gallery page and the first page of all flagged
clips in headless Chromium (cache off) and
reads the browser's own navigation timing (navigation start to the end of the load event; lazy
images below the fold are not part of "loaded", as in any browser). Prints one JSON line per page
and a last line with the figures against the targets (build <= 60 s, load <= 2 s).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_report import CHROMIUM, Chromium  # noqa: E402  (the report test's DevTools driver)

NAVIGATION_MS = """
(() => { const n = performance.getEntriesByType("navigation")[0];
         return {load_ms: n.loadEventEnd - n.startTime, dom_ms: n.domContentLoadedEventEnd - n.startTime,
                 tiles: document.querySelectorAll("figure").length,
                 bytes: n.transferSize || n.encodedBodySize}; })()
"""


def load_times(pages: list[Path], runs: int) -> list[dict]:
    results = []
    with tempfile.TemporaryDirectory() as profile:
        browser = Chromium(CHROMIUM, Path(profile))
        try:
            target = browser.call("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = browser.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            browser.call("Page.enable", session=session)
            browser.call("Network.enable", session=session)
            browser.call("Network.setCacheDisabled", {"cacheDisabled": True}, session=session)
            for page in pages:
                for run in range(runs):
                    browser.events[:] = [e for e in browser.events if e["method"] != "Page.loadEventFired"]
                    browser.call("Page.navigate", {"url": page.as_uri()}, session=session)
                    browser.wait_for("Page.loadEventFired")
                    time.sleep(0.2)  # loadEventEnd is set just after the event
                    reply = browser.call("Runtime.evaluate", {"expression": NAVIGATION_MS, "returnByValue": True},
                                         session=session)
                    results.append({"page": page.name, "run": run + 1, **reply["result"]["value"]})
        finally:
            browser.close()
    return results


def bench_parser(description: str, name: str) -> argparse.ArgumentParser:
    """The options both page benchmarks share (--out, --runs)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / name)
    parser.add_argument("--runs", type=int, default=3, help="page loads per page (default 3)")
    return parser


def build_then_load(command: list[str], pages_of, runs: int) -> tuple[float, list[dict]]:
    """Run `command` (a separate process, timed from start to exit), then load the pages
    `pages_of()` names in headless Chromium `runs` times each; prints one JSON line per load.
    -> (build seconds, the loads)."""
    start = time.perf_counter()
    subprocess.run(command, check=True)
    build_s = time.perf_counter() - start
    results = load_times(pages_of(), runs)
    for row in results:
        print(json.dumps(row))
    return build_s, results


def main() -> int:
    parser = bench_parser(__doc__.split("\n\n")[0], "bench_audit")
    parser.add_argument("images", type=Path)
    args = parser.parse_args()
    if CHROMIUM is None:
        print("error: chromium not found", file=sys.stderr)
        return 2

    def pages() -> list[Path]:  # the index, a class's first page, the flagged clips' first page
        found = [args.out / "index.html", sorted((args.out / "pages").glob("*-all-1.html"))[0],
                 args.out / "pages" / "all-all-flagged-1.html"]
        return [p for p in found if p.is_file()]

    build_s, results = build_then_load([sys.executable, "-m", "preprocess.audit", str(args.images), "--out",
                                        str(args.out), "--quiet"], pages, args.runs)
    worst = max(r["load_ms"] for r in results)
    images = sum(1 for _ in (args.out / "img").rglob("*.png"))
    print(json.dumps({"images": images, "pages": sum(1 for _ in (args.out / "pages").iterdir()),
                      "build_s": round(build_s, 1), "build_target_s": 60, "worst_load_ms": round(worst),
                      "load_target_ms": 2000}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
