"""Where do the planted swapped labels rank? The label-check quality figure of the dataset audit.

    python tests/bench_planted_ranking.py WORKDIR EPOCHS FOLDS FOLD_EPOCHS     # e.g. /tmp/x14 60 5 auto

Plants the faults of tests/test_audit.py into WORKDIR/clips (once), renders them, trains the given
model for EPOCHS (once per EPOCHS), runs the audit with --folds and --fold-epochs (`auto`: the audit's default) and prints the swapped
clips' ranks among the contradicted clips (without the planted wrong-class copies) and how many
untouched clips are flagged, and whether the target is met (all 10 swapped clips in the top 20).
The planting is tests/test_audit.py's (`plant_faults`, the planted-faults tests); the unit test of the
label check (test_swapped_labels_are_contradicted_out_of_fold_and_ranked_first) runs on a small
constructed set instead, since this takes minutes.
"""
from __future__ import annotations

import csv
import pickle
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import test_audit  # noqa: E402
from conftest import REAL_DATA  # noqa: E402

from preprocess import audit  # noqa: E402
from preprocess.prepare import main as prepare_main  # noqa: E402
from train.train import main as train_main  # noqa: E402


def main() -> int:
    base, epochs, folds, fold_epochs = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    if not (base / "images").exists():
        faults = test_audit.plant_faults(REAL_DATA, base / "clips")
        (base / "faults.pkl").write_bytes(pickle.dumps(faults))
        assert prepare_main(["--source", "folder", "--root", str(base / "clips"), "--out", str(base / "images"),
                             "--val-pct", "20", "--test-pct", "20", "--workers", "2", "--quiet"]) == 0
    faults = pickle.loads((base / "faults.pkl").read_bytes())
    model_dir = base / f"model{epochs}"
    if not (model_dir / "model.pt").exists():
        assert train_main(["--images", str(base / "images"), "--out", str(model_dir), "--epochs", epochs,
                           "--cache", "--no-progress"]) == 0
    out = base / f"audit_{epochs}_{folds}_{fold_epochs}"
    audit.main([str(base / "images"), "--out", str(out), "--model", str(model_dir / "model.pt"),
                "--folds", folds, "--quiet"] + (["--fold-epochs", fold_epochs] if fold_epochs != "auto" else []))
    with open(out / "suspects.csv", newline="") as handle:
        ranked = [row["source"] for row in csv.DictReader(handle) if row["source"] not in faults["duplicate_class"]]
    flagged = test_audit.read_flags(out)
    untouched = sum(1 for s in faults["untouched"] if s in flagged)
    ranks = sorted(ranked.index(s) + 1 for s in faults["swapped"] if s in ranked)
    print({"swapped_ranks": ranks,
           "contradicted": len(ranked),
           "swapped_flagged": sum("suspect_label" in flagged.get(s, []) for s in faults["swapped"]),
           "untouched_flagged": untouched, "untouched": len(faults["untouched"]),
           "target_all_in_top_20": len(ranks) == len(faults["swapped"]) and ranks[-1] <= 20})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
