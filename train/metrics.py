"""Scores and pictures: per-class precision/recall/F1, confusion matrix, curves.png, confusion.png, and
the timeline of a long recording scanned by predict."""
from __future__ import annotations

import json
import os
import numpy as np
import torch

from preprocess.atomic import atomic_write_text, atomic_writer


def confusion_matrix(labels, predictions, num_classes: int) -> list[list[int]]:
    """rows = true class, columns = predicted class."""
    labels = torch.as_tensor(labels, dtype=torch.long)
    predictions = torch.as_tensor(predictions, dtype=torch.long)
    counts = torch.bincount(labels * num_classes + predictions, minlength=num_classes * num_classes)
    return counts.view(num_classes, num_classes).tolist()


def classification_report(labels, predictions, classes: list[str]) -> dict:
    """{"accuracy", "per_class": {cls: {"precision", "recall", "support"}}, "confusion"}.

    A class never predicted has precision 0.0 (not NaN: JSON has no NaN), and recall 0.0 without support.
    """
    confusion = confusion_matrix(labels, predictions, len(classes))
    total = sum(map(sum, confusion))
    correct = sum(confusion[i][i] for i in range(len(classes)))
    per_class = {}
    for i, name in enumerate(classes):
        support = sum(confusion[i])
        predicted = sum(row[i] for row in confusion)
        per_class[name] = {"precision": confusion[i][i] / predicted if predicted else 0.0,
                           "recall": confusion[i][i] / support if support else 0.0,
                           "support": support}
    return {"accuracy": correct / total if total else 0.0, "per_class": per_class, "confusion": confusion}


def f1_score(precision: float | None, recall: float | None) -> float | None:
    """Harmonic mean of precision and recall; 0.0 when both are 0, None when either is unknown."""
    if precision is None or recall is None:
        return None
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def format_confusion(confusion: list[list[int]], classes: list[str]) -> str:
    """Plain-text matrix for the terminal: rows = true class, columns = predicted."""
    width = max(7, *(len(c) for c in classes), *(len(str(v)) for row in confusion for v in row))
    lines = [" " * width + "  " + " ".join(f"{c:>{width}}" for c in classes) + "   <- predicted"]
    for name, row in zip(classes, confusion):
        lines.append(f"{name:>{width}}  " + " ".join(f"{v:>{width}}" for v in row))
    return "\n".join(lines)


def write_json_atomic(data, path: str | os.PathLike) -> None:
    atomic_write_text(path, json.dumps(data, indent=2) + "\n")


def plot_curves(epochs: list[dict], path: str | os.PathLike) -> None:
    """Loss and accuracy per epoch, train vs. val, side by side."""
    plt = _pyplot()
    x = [e["epoch"] for e in epochs]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, title in ((ax_loss, "loss", "loss"), (ax_acc, "acc", "accuracy")):
        ax.plot(x, [e[f"train_{key}"] for e in epochs], marker="o", label="train")
        ax.plot(x, [e[f"val_{key}"] for e in epochs], marker="o", label="val")
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    with atomic_writer(path) as handle:
        fig.savefig(handle, format="png", dpi=100)
    plt.close(fig)


def plot_confusion(confusion: list[list[int]], classes: list[str], path: str | os.PathLike,
                   title: str = "test confusion") -> None:
    plt = _pyplot()
    size = max(4.0, 0.6 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(confusion, cmap="Blues")
    peak = max(max(row) for row in confusion) or 1
    for i, row in enumerate(confusion):
        for j, value in enumerate(row):
            ax.text(j, i, str(value), ha="center", va="center",
                    color="white" if value > peak / 2 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    with atomic_writer(path) as handle:
        fig.savefig(handle, format="png", dpi=100)
    plt.close(fig)


def plot_timeline(scan, classes: list[str], out: str | os.PathLike) -> None:
    """A long recording scanned by train.detect: waveform with the detections on top, per-class
    confidence over time below; atomic write."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no display needed

    colors = [f"C{i}" for i in range(len(classes))]
    fig = Figure(figsize=(12, 5.5), constrained_layout=True)
    ax_wave, ax_prob = fig.subplots(2, 1, sharex=True)
    step, lows, highs = scan.envelope_step, scan.envelope[:, 0], scan.envelope[:, 1]  # keeps peaks visible
    times = (np.arange(len(lows)) * step + step / 2) / scan.sample_rate
    ax_wave.fill_between(times, lows, highs, color="0.35", linewidth=0)
    peak = float(max(np.abs(scan.envelope).max(initial=0.0), 0.0)) or 1.0
    for d in scan.detections:
        color = colors[classes.index(d.label)]
        ax_wave.axvspan(d.start, d.end, color=color, alpha=0.25)
        ax_wave.text(d.time, peak * 1.02, f"{d.label} {d.confidence:.2f}", ha="center", va="bottom",
                     color=color, fontsize=9, fontweight="bold")
    ax_wave.set_ylim(-peak * 1.05, peak * 1.25)
    ax_wave.set_ylabel("amplitude")
    ax_wave.set_title(f"{scan.path}: {len(scan.detections)} detection(s)")

    centres = scan.starts_s + scan.window_s / 2
    if scan.window_active is not None:
        ax_prob.fill_between(centres, 0, 1.02, where=~scan.window_active, step="mid", color="0.9",
                             label="gated: no sound event")
    for i, name in enumerate(classes):
        ax_prob.plot(centres, scan.probs[:, i], color=colors[i], linewidth=0.7, alpha=0.45, linestyle="--")
        ax_prob.plot(centres, scan.smoothed[:, i], color=colors[i], linewidth=1.8, label=f"{name} (smoothed)")
    ax_prob.axhline(scan.threshold, color="black", linestyle=":", linewidth=1, label="threshold")
    ax_prob.set_ylim(0, 1.02)
    ax_prob.set_xlim(0, max(scan.duration_s, centres[-1]))
    ax_prob.set_xlabel("time (s), confidence drawn at the centre of each window (dashed: raw)")
    ax_prob.set_ylabel("confidence")
    ax_prob.legend(loc="upper right", fontsize=8, ncol=len(classes) + 2)
    with atomic_writer(out) as handle:
        fig.savefig(handle, format="png", dpi=110)


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")  # files only: never needs a display
    import matplotlib.pyplot as plt
    return plt
