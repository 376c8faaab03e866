"""Scores and pictures of a run: per-class precision/recall, confusion matrix, curves.png, confusion.png."""
from __future__ import annotations

import json
import os

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


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")  # files only: never needs a display
    import matplotlib.pyplot as plt
    return plt
