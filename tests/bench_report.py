"""Benchmark of the model report: build time, and load time in headless Chromium.

    python tests/bench_report.py MODEL_DIR --images IMAGES [--out DIR] [--runs 3]

Builds `python -m train.report MODEL_DIR --images IMAGES --out DIR` (a separate process, timed
from start to exit: it predicts every test image, so its cost grows with the test split), then
opens DIR/index.html and every other page it wrote in headless Chromium (cache off) and reads the
browser's own navigation timing, as tests/bench_audit.py does for the audit page. Prints one JSON
line per page load and a last line with the figures against the targets (build <= 60 s on ~11k
test images, load <= 2 s).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_audit import bench_parser, build_then_load  # noqa: E402
from test_report import CHROMIUM  # noqa: E402


def main() -> int:
    parser = bench_parser(__doc__.split("\n\n")[0], "bench_report")
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--images", type=Path, required=True)
    args = parser.parse_args()
    if CHROMIUM is None:
        print("error: chromium not found", file=sys.stderr)
        return 2
    build_s, results = build_then_load(
        [sys.executable, "-m", "train.report", str(args.model_dir), "--images", str(args.images), "--out",
         str(args.out)],
        lambda: sorted(args.out.rglob("*.html"), key=lambda p: (p.name != "index.html", str(p))), args.runs)
    pages = sorted(args.out.rglob("*.html"))
    worst = max(r["load_ms"] for r in results)
    print(json.dumps({"test_images": sum(1 for _ in (args.images / "test").rglob("*.png")),
                      "pages": len(pages), "html_kb": round(sum(p.stat().st_size for p in pages) / 1024, 1),
                      "build_s": round(build_s, 1), "build_target_s": 60, "worst_load_ms": round(worst),
                      "load_target_ms": 2000}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
