"""False rejects against false accepts per hour, swept over the detection threshold (a DET curve).

Wake-word engines are compared at a false-accept budget: "5 % false rejects at 0.5 false accepts an
hour". One scan of a long negative recording and one of a recording with the target words laid in
give the posteriors; every threshold is then applied to those (detect.redetect), so the whole curve
costs one pass of the model.

Counting rule: a false accept is a detection of a target word in the negative recording; windows of
one event, and events closer than the scanner's refractory time, count once (detect.find_detections).
A laid target is found when a detection of its word lies within its clip +- MATCH_SLACK_S.
"""
from __future__ import annotations

import numpy as np

from train import detect

MATCH_SLACK_S = 0.3        # a detection belongs to a laid clip if its time is within the clip +- this
RATES = (0.5, 1.0, 2.0)    # false accepts per hour at which false rejects are reported
THRESHOLDS = tuple(float(t) for t in np.round(np.concatenate(
    [np.arange(0.30, 0.99, 0.01), np.arange(0.990, 0.999, 0.001), [0.9995, 0.9998, 0.9999]]), 4))


def found(detections: list[detect.Detection], word: str, start: float, end: float) -> bool:
    return any(d.label == word and start - MATCH_SLACK_S <= d.time <= end + MATCH_SLACK_S for d in detections)


def misses(detections: list[detect.Detection], laid: list[tuple[str, float, float]]) -> int:
    """Laid clips (word, start_s, end_s) that no detection of their word matches."""
    return sum(not found(detections, w, a, b) for w, a, b in laid)


def sweep(negative: detect.Scan, positive: detect.Scan, classes: list[str],
          laid: list[tuple[str, float, float]], thresholds=THRESHOLDS) -> dict:
    """False accepts in `negative` and misses of the `laid` targets in `positive`, per threshold."""
    return {"thresholds": list(thresholds),
            "false_accepts": [len(detect.redetect(negative, classes, t)) for t in thresholds],
            "misses": [misses(detect.redetect(positive, classes, t), laid) for t in thresholds],
            "negative_hours": negative.duration_s / 3600, "targets": len(laid)}


def pooled(curves: list[dict]) -> dict:
    """Several folds' curves as one: false accepts and misses added up, over the hours and targets
    added up (each fold weighs by its length, not equally)."""
    if len({tuple(c["thresholds"]) for c in curves}) != 1:
        raise ValueError("curves swept over different thresholds")
    return {"thresholds": curves[0]["thresholds"],
            "false_accepts": np.sum([c["false_accepts"] for c in curves], axis=0).tolist(),
            "misses": np.sum([c["misses"] for c in curves], axis=0).tolist(),
            "negative_hours": float(sum(c["negative_hours"] for c in curves)),
            "targets": int(sum(c["targets"] for c in curves))}


def operating_points(curve: dict, rates=RATES) -> dict:
    """For each rate: the lowest threshold whose false accepts per hour are at most the rate, and
    the false-reject rate there ({"0.5": {"threshold", "frr", "fa_per_hour"}, ...}); a rate that no
    threshold reaches gets frr 1.0 and threshold None."""
    hours, targets = curve["negative_hours"], max(1, curve["targets"])
    points = {}
    for rate in rates:
        key = f"{rate:g}"
        points[key] = {"threshold": None, "frr": 1.0, "fa_per_hour": None}
        for t, fa, missed in zip(curve["thresholds"], curve["false_accepts"], curve["misses"]):
            if fa / hours <= rate:
                points[key] = {"threshold": t, "frr": round(missed / targets, 4),
                               "fa_per_hour": round(fa / hours, 3)}
                break
    return points


def frr_at(curve: dict, rates=RATES) -> dict:
    return {k: v["frr"] for k, v in operating_points(curve, rates).items()}


def plot(curves: dict, path) -> None:
    """curves: {name: curve}; one DET line each, false accepts per hour (log) against false rejects."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4.2), dpi=110)
    for name, curve in curves.items():
        hours = curve["negative_hours"]
        counts = np.asarray(curve["false_accepts"])
        keep = (counts > 0) | (np.cumsum(counts == 0) == 1)  # of the thresholds with none, the lowest
        fa = np.maximum(counts[keep] / hours, 0.5 / hours)  # none is drawn at half a false accept
        frr = np.asarray(curve["misses"])[keep] / max(1, curve["targets"]) * 100
        ax.plot(fa, frr, marker=".", markersize=3, label=f"{name} ({hours:.1f} h negative)")
    for rate in RATES:
        ax.axvline(rate, color="0.8", lw=0.8, zorder=0)
    ax.set_xscale("log")
    ax.set_xlabel("false accepts per hour")
    ax.set_ylabel("false rejects (%)")
    ax.set_title("DET: threshold swept over one scan")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
