#!/usr/bin/env python
"""Draw the learning curves of a run to a PNG: training losses per objective, and every validation
perplexity, from the run's train.jsonl.

    python tools/plot_log.py DUMP_DIR [OUT.png]      (default: DUMP_DIR/curves.png)
"""
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from xlm.fileio import DataError  # noqa: E402


def read_events(path):
    if not os.path.isfile(path):
        raise DataError(f"{path}: no such file (is this a run's dump folder?)")
    train, evals = [], []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            try:
                event = json.loads(line)
            except ValueError:
                raise DataError(f"{path}:{line_no}: not a JSON line") from None
            (train if event.get("kind") == "train" else evals).append(event)
    if not train and not evals:
        raise DataError(f"{path}: no events yet")
    return train, evals


def loss_curves(train):
    """{objective's loss name (MLM-en, BT-en-fr-en, ...): [(iteration, loss)]}; the other values of a
    progress event (rates, data wait, learning rate) are not losses."""
    names = sorted({k for e in train for k in e if re.match(r"(CLM|MLM|PC|AE|MT|BT)-", k)})
    return {name: [(e["n_iter"], e[name]) for e in train if name in e] for name in names}


def plot(dump, out):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise DataError("plotting needs matplotlib: pip install matplotlib") from None
    train, evals = read_events(os.path.join(dump, "train.jsonl"))
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for key, points in loss_curves(train).items():
        left.plot(*zip(*points), label=key)
    left.set(xlabel="iteration", ylabel="training loss", title="training")
    for key in sorted({k for e in evals for k in e if k.startswith("valid_") and k.endswith("_ppl")}):
        points = [(e["epoch"], e[key]) for e in evals if key in e]
        right.plot(*zip(*points), marker="o", label=key)
    right.set(xlabel="epoch", ylabel="perplexity", yscale="log", title="validation")
    for ax in (left, right):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(dump)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    return out


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    try:
        print(plot(sys.argv[1], sys.argv[2] if len(sys.argv) == 3 else os.path.join(sys.argv[1], "curves.png")))
    except DataError as e:
        sys.exit(f"error: {e}")
