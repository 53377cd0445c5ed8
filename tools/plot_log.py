#!/usr/bin/env python
"""Draw the learning curves of a run to a PNG: training losses per objective, and every validation
perplexity, from the run's train.jsonl.

    python tools/plot_log.py DUMP_DIR [OUT.png]      (default: DUMP_DIR/curves.png)
"""
import argparse
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from xlm.fileio import DataError, atomic_write, check_output, check_streams, iter_line_blocks  # noqa: E402


def read_events(path):
    if not os.path.exists(path):
        raise DataError(f"{path}: no such file (is this a run's dump folder?)")
    train, evals = [], []
    # an empty, non-regular or non-UTF-8 file is an error naming it (and the line of the first bad byte)
    numbered = ((n, line) for first, lines in iter_line_blocks(path) for n, line in enumerate(lines, first))
    for line_no, line in numbered:
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
    from matplotlib.backend_bases import FigureCanvasBase
    train, evals = read_events(os.path.join(dump, "train.jsonl"))
    image_format = os.path.splitext(out)[1][1:].lower() or "png"
    formats = FigureCanvasBase.get_supported_filetypes()
    if image_format not in formats:
        raise DataError(f"{out}: not an image file name (matplotlib writes {', '.join(sorted(formats))})")
    check_output(out)
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
    with atomic_write(out) as f:  # a plot that fails halfway leaves the previous image
        fig.savefig(f, format=image_format, dpi=100)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dump", metavar="DUMP_DIR", help="the run's folder (where train.jsonl is)")
    parser.add_argument("out", metavar="OUT.png", nargs="?", help="the image (default: DUMP_DIR/curves.png)")
    args = parser.parse_args(argv)
    check_streams("stdout")
    print(plot(args.dump, args.out or os.path.join(args.dump, "curves.png")))


if __name__ == "__main__":
    try:
        main()
    except DataError as e:
        sys.exit(f"error: {e}")
