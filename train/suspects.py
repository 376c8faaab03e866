"""python -m train.suspects: which clips does a model contradict? The audit's label check.

    python -m train.suspects images/ --model models/NAME/model.pt --out judgments.json
    python -m preprocess.audit images/ --judgments judgments.json      # shows them, ranked


val and test clips are judged by the given model: it never trained on them. Train clips are judged
out of fold: the train split's speakers are cut into K folds, and for each fold a quick model (the
checkpoint's architecture, `python -m train`'s recipe, a short run: `quick_epochs`) is trained on the other folds
plus the test split, picks its epoch on val, and judges this fold: no clip is judged by a model that
memorised its (possibly wrong) label.
With folds=0 the given model judges the train split too, and the page says so.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import itertools
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from preprocess import cli, judgments
from preprocess.audit_data import AuditError, Dataset, load_dataset
from preprocess.render import image_to_tensor
from preprocess.sources import group_id
from train.checkpoint import CheckpointError, load_model
from train.data import load_png

BATCH_SIZE = 128
FOLD_SALT = b"specvision-audit-folds:"
SIMILARITY_BLOCK = 1 << 22  # similarities computed at a time by the speaker evidence (16 MB of float32)
MIN_FOLD_EPOCHS = 12     # a quick model's epochs: at least this many ...
MIN_FOLD_STEPS = 500     # ... and enough for this many optimizer steps, so a small set's judges are not
                         # undertrained (12 epochs of 540 images are 108 steps: 7 of 10 planted swaps in
                         # the top 20; docs/benchmarks.md), at most `python -m train`'s EPOCHS


def probabilities(model: torch.nn.Module, channels: int, paths: list[Path], device: torch.device,
                  progress: bool = False, desc: str = "predict", features: list | None = None) -> np.ndarray:
    """Softmax of the model for each PNG (N x classes), in the order given. With `features` (a list),
    the input of the model's last Linear layer for each PNG (N x D, what the classifier reads) is
    appended to it, or None when the model has no Linear layer."""
    out, seen = [], []
    linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    keep = (lambda _, args: seen.append(args[0].float().flatten(1).cpu()))
    hook = linear[-1].register_forward_pre_hook(keep) if features is not None and linear else None
    try:
        with torch.inference_mode():
            for start in tqdm(range(0, len(paths), BATCH_SIZE), desc=desc, unit="batch", leave=False,
                              disable=not progress or len(paths) < 4 * BATCH_SIZE):
                batch = torch.stack([image_to_tensor(load_png(str(p), channels), channels)
                                     for p in paths[start:start + BATCH_SIZE]])
                out.append(model(batch.to(device)).float().softmax(1).cpu().numpy())
    finally:
        if hook is not None:
            hook.remove()
    if features is not None:
        features.append(torch.cat(seen).numpy() if hook is not None and seen else None)
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def fold_of(source: str, folds: int) -> int:
    """Fold of a clip by its speaker, so one speaker's clips never judge each other."""
    digest = hashlib.sha256(FOLD_SALT + group_id(Path(source).name).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % folds


def _link_images(root: Path, split: str, rows: list[dict], images: Path) -> None:
    for row in rows:
        dest = root / split / row["label"] / Path(row["png"]).name
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.abspath(images / row["png"]), dest)


def quick_epochs(train_images: int, requested: int | None = None) -> int:
    """Epochs of each out-of-fold model: `requested`, else MIN_FOLD_EPOCHS or enough epochs of
    `train_images` for MIN_FOLD_STEPS steps, whichever is more, capped at the train recipe's EPOCHS.
    A 100k-clip set gets 12 epochs (thousands of steps each); an 800-clip one the full recipe."""
    from train.options import BATCH_SIZE as TRAIN_BATCH, EPOCHS

    if requested:
        return requested
    steps_per_epoch = max(1, math.ceil(train_images / TRAIN_BATCH))
    return min(EPOCHS, max(MIN_FOLD_EPOCHS, math.ceil(MIN_FOLD_STEPS / steps_per_epoch)))


def train_fold(data: Dataset, train_rows: list[dict], held_rows: list[dict], val_rows: list[dict],
               arch: str, epochs: int, seed: int, work: Path) -> Path:
    """A quick model trained on `train_rows`, its epoch picked on `val_rows` (or, without a val split,
    on `held_rows`), in a temp images folder of links; -> its model.pt."""
    from train.train import main as train_main

    images = work / "images"
    _link_images(images, "train", train_rows, data.images)
    _link_images(images, "val", val_rows or held_rows, data.images)
    _link_images(images, "test", held_rows, data.images)
    shutil.copyfile(data.images / "render.json", images / "render.json")
    log = io.StringIO()
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        code = train_main(["--images", str(images), "--out", str(work / "model"), "--arch", arch,
                           "--epochs", str(epochs), "--patience", str(epochs), "--seed", str(seed),
                           "--cache", "--no-progress"])
    if code != 0:
        raise RuntimeError(log.getvalue().strip().splitlines()[-1] if log.getvalue().strip() else f"exit {code}")
    return work / "model" / "model.pt"


def label_check(model_path: Path, data: Dataset, folds: int, epochs: int | None, threshold: float, seed: int,
                progress: bool) -> tuple[dict[int, dict], dict]:
    """-> ({row index: {"predicted", "confidence", "how", "rank"[, "speaker"]}} for every clip whose label
    the judging model contradicts (ranked by `rank_suspects`), page info: which predictions judged
    which split, counts, notes)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        model, ckpt, settings = load_model(model_path, device)
    except CheckpointError as err:
        raise AuditError(str(err)) from None
    if settings.digest() != data.settings.digest():
        raise AuditError(f"{model_path}: trained on images rendered with other settings than "
                         f"{data.images / 'render.json'}; its predictions would mean nothing here")
    classes, channels = list(ckpt["classes"]), int(ckpt["input_size"][0])
    notes = []
    unknown = sorted({r["label"] for r in data.rows} - set(classes))
    if unknown:
        notes.append(f"classes {unknown} are not classes of the model: their clips are not judged.")
    by_split = {s: [i for i, r in enumerate(data.rows) if r["split"] == s and r["label"] in classes]
                for s in ("train", "val", "test")}
    probs: dict[int, np.ndarray] = {}
    how: dict[int, str] = {}
    features: dict[int, np.ndarray] = {}
    judged_by: dict[int, int] = {}  # which network judged a clip: features are comparable within one only
    networks = itertools.count()

    def judge(indices: list[int], net, name: str, desc: str) -> None:
        found: list = []
        result = probabilities(net, channels, [data.images / data.rows[i]["png"] for i in indices], device,
                               progress, desc, found)
        network = next(networks)
        for i, p in zip(indices, result):
            probs[i], how[i], judged_by[i] = p, name, network
        if found[0] is not None:  # float16: 105k clips x 1024 values are 215 MB
            features.update(zip(indices, found[0].astype(np.float16)))

    model_name = f"{Path(model_path).parent.name}/{Path(model_path).name}"
    split_how = {}
    for split in ("val", "test"):
        judge(by_split[split], model, "the model, out-of-sample", f"predict {split}")
        split_how[split] = f"{model_name} (never trained on this split)"
    train = by_split["train"]
    if train and folds >= 2:
        # each quick model learns from the other folds plus the test split (more data, better judges;
        # the given model alone judges test), and picks its epoch on val
        val_rows = [data.rows[i] for i in by_split["val"]]
        extra = [data.rows[i] for i in by_split["test"]]
        fold = {i: fold_of(data.rows[i]["source"], folds) for i in train}
        epochs = quick_epochs(round(len(train) * (folds - 1) / folds) + len(extra), epochs)
        failed = []
        for k in tqdm(range(folds), desc=f"out-of-fold models ({epochs} epochs each)", unit="fold",
                      disable=not progress):
            held = [i for i in train if fold[i] == k]
            rest = [data.rows[i] for i in train if fold[i] != k] + extra
            if not held:
                continue
            with tempfile.TemporaryDirectory(prefix="specvision-fold-") as work:
                try:
                    fold_model = train_fold(data, rest, [data.rows[i] for i in held], val_rows, ckpt["arch"],
                                            epochs, seed + k, Path(work))
                    net, _, _ = load_model(fold_model, device)
                except (RuntimeError, CheckpointError) as err:
                    failed.append(k)
                    notes.append(f"fold {k + 1} of {folds}: quick training failed ({err}); its clips were "
                                 f"judged by the model itself, which has seen them.")
                    judge(held, model, "the model, in-sample", f"predict fold {k + 1}")
                    continue
                judge(held, net, "out-of-fold", f"predict fold {k + 1}")
        split_how["train"] = (f"out-of-fold: {folds} quick {ckpt['arch']} models ({epochs} epochs each), each "
                              f"trained on the test split and the train split without one fold of its "
                              f"speakers" + (f"; fold(s) {[k + 1 for k in failed]} in-sample" if failed else ""))
    elif train:
        judge(train, model, "the model, in-sample", "predict train")
        split_how["train"] = (f"{model_name}, in-sample: it was trained on these clips, so a memorised wrong "
                              f"label can go unnoticed (use --folds K)")
    labels = [r["label"] for r in data.rows]
    suspects = contradictions(probs, how, labels, classes)
    rank_suspects(suspects, speaker_evidence(suspects, features, judged_by,
                                             [group_id(Path(r["source"]).name) for r in data.rows], labels))
    info = {"name": model_name, "arch": ckpt["arch"], "threshold": threshold, "notes": notes,
            "splits": [{"split": s, "how": split_how[s], "judged": len(by_split[s]),
                        "suspects": sum(1 for i in by_split[s] if i in suspects
                                        and suspects[i]["confidence"] >= threshold)}
                       for s in ("train", "val", "test") if by_split[s]]}
    return suspects, info


def contradictions(probs: dict[int, np.ndarray], how: dict[int, str], labels: list[str],
                   classes: list[str]) -> dict[int, dict]:
    """{row: {"predicted", "confidence", "how"}} for each judged clip whose most likely class is not its label."""
    suspects = {}
    for i, p in probs.items():
        best = int(np.argmax(p))
        if classes[best] != labels[i]:
            suspects[i] = {"predicted": classes[best], "confidence": float(p[best]), "how": how[i]}
    return suspects


def speaker_evidence(suspects: dict[int, dict], features: dict[int, np.ndarray], judged_by: dict[int, int],
                     speakers: list[str], labels: list[str]) -> dict[int, float]:
    """{row: how much more a contradicted clip resembles the same speaker's takes of the predicted class
    than their other takes of its own label} (cosine similarity of the judging network's features).

    Why: a model unsure of a voice or an accent is wrong on that speaker's takes alike, while a take
    filed under the wrong word sounds like the speaker's takes of the word it is. Only takes judged by
    the same network count; a class with no such take counts at the typical similarity of a take to
    the same speaker's other takes of its label (the median over the set), i.e. as no evidence."""
    groups: dict[tuple, list[int]] = {}
    for i in features:
        groups.setdefault((judged_by[i], speakers[i]), []).append(i)
    best: dict[int, dict[str, float]] = {}
    for members in groups.values():
        if len(members) < 2:
            continue
        unit = np.stack([features[i] for i in members]).astype(np.float32)
        unit /= np.maximum(np.linalg.norm(unit, axis=1, keepdims=True), 1e-12)
        member_labels = np.array([labels[i] for i in members])
        rows = max(1, SIMILARITY_BLOCK // len(members))  # one speaker with 100k takes stays bounded too
        for lo in range(0, len(members), rows):
            similar = unit[lo:lo + rows] @ unit.T
            similar[np.arange(len(similar)), np.arange(lo, lo + len(similar))] = -np.inf  # not itself
            for label in np.unique(member_labels):
                closest = np.where(member_labels == label, similar, -np.inf).max(axis=1)
                for k in np.flatnonzero(np.isfinite(closest)):
                    best.setdefault(members[lo + k], {})[str(label)] = float(closest[k])
    own = [by_label[labels[i]] for i, by_label in best.items() if labels[i] in by_label]
    typical = float(np.median(own)) if own else 0.0
    return {i: best.get(i, {}).get(s["predicted"], typical) - best.get(i, {}).get(labels[i], typical)
            for i, s in suspects.items() if i in features}


def rank_suspects(suspects: dict[int, dict], evidence: dict[int, float]) -> None:
    """Adds "speaker" (the evidence above, where there are features) and "rank" (1 = most suspicious) to
    each suspect: ranked by the judging model's confidence in another class plus the speaker evidence
    (both read off the judging network; no evidence adds nothing)."""
    for i, e in evidence.items():
        suspects[i]["speaker"] = round(e, 4)
    order = sorted(suspects, key=lambda i: (-(suspects[i]["confidence"] + evidence.get(i, 0.0)),
                                            -suspects[i]["confidence"], i))
    for rank, i in enumerate(order, 1):
        suspects[i]["rank"] = rank


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m train.suspects",
        description="The label check: judge every rendered clip with a model that never trained on it (val and "
                    "test: the model; train: out-of-fold quick models) and write the clips it contradicts, "
                    "ranked, to a file that python -m preprocess.audit --judgments shows.",
        epilog="Exit status: 0 written, 2 could not start (bad images folder, model or options).")
    parser.add_argument("images", type=Path, help="folder written by `python -m preprocess`")
    parser.add_argument("--model", type=Path, required=True, metavar="MODEL_PT", help="models/NAME/model.pt")
    parser.add_argument("--out", type=Path, required=True, metavar="FILE", help="the label-check file to write")
    parser.add_argument("--folds", type=int, default=5, metavar="K",
                        help="judge the train split out of fold by K quick models (0: by the model itself, "
                             "which has seen those clips; default: %(default)s)")
    parser.add_argument("--fold-epochs", type=int, default=None, metavar="N",
                        help="epochs of each out-of-fold model (default: quick_epochs)")
    parser.add_argument("--confidence", type=float, default=0.8, metavar="P",
                        help="confidence in another class counted as a suspect in the summary (default: %(default)s)")
    parser.add_argument("--audio-root", type=Path, metavar="DIR", help="where the source clips are")
    parser.add_argument("--seed", type=int, default=0, help="seed of the out-of-fold training (default: 0)")
    cli.add_quiet_flag(parser)
    return parser


@cli.command
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.folds < 0 or args.folds == 1 or (args.fold_epochs is not None and args.fold_epochs < 1) \
            or not 0.0 < args.confidence <= 1.0:
        parser.error("--folds 0 or >= 2, --fold-epochs >= 1, 0 < --confidence <= 1")
    if not args.model.is_file():
        raise AuditError(f"{args.model}: no such model file")
    data = load_dataset(args.images, args.audio_root)
    suspects, info = label_check(args.model, data, args.folds, args.fold_epochs, args.confidence, args.seed,
                                 not args.quiet)
    judgments.write(args.out, data, suspects, info)
    print(f"label check of {args.images}: {len(suspects)} clip(s) contradicted by {info['name']} -> {args.out}")
    return 0


if __name__ == "__main__":
    cli.run(main)
