#!/usr/bin/env python
"""Print the per-epoch numbers of several runs side by side, from their train.log files (the original
XLM's or xlm's: both write the same log lines), e.g. to compare xlm with the original on the same flags.

    python tools/compare_logs.py orig/train.log xlm/train.log [--labels orig,xlm] [--metrics valid_mlm_ppl,bleu]

For each epoch: train_s (wall seconds from "Starting epoch" to "End of epoch"), eval_s (from there to the
epoch's __log__ line), updates (training iterations so far, as of the last progress line of the epoch),
words/s (mean of the epoch's progress lines, but for the first of each epoch after the first, whose rate
the original takes over the previous epoch's evaluation too), then the metrics of the __log__ line: every
valid_* metric, or those whose name contains one of --metrics.
"""
import argparse
import os
import re
import sys
from datetime import datetime

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from xlm.fileio import DataError, check_streams, iter_line_blocks  # noqa: E402
from xlm.train.logging import logged_scores  # noqa: E402

LINE = re.compile(r"^[A-Z]+ - (\d\d/\d\d/\d\d \d\d:\d\d:\d\d) - [^-]+ - (.*)$")
PROGRESS = re.compile(r"^\s*(\d+) - .* ([\d.]+) words/s")
START, END = re.compile(r"Starting epoch (\d+)"), re.compile(r"End of epoch (\d+)")


def read_log(path):
    """One dict per logged epoch: timing, throughput and the __log__ metrics."""
    if os.path.isdir(path):
        inside = os.path.join(path, "train.log")
        hint = f" (the run's is {inside})" if os.path.isfile(inside) else ""
        raise DataError(f"{path}: is a folder, expected a train.log file{hint}")
    epochs, started, ended, updates, speeds = [], None, None, None, []
    spans_evaluation = False  # the next progress line's window holds an evaluation (in the original's log)
    # a missing, empty or non-UTF-8 file is an error naming it (and the line of the first bad byte)
    numbered = ((n, line) for first, lines in iter_line_blocks(path) for n, line in enumerate(lines, first))
    for line_no, line in numbered:
        m = LINE.match(line)
        if not m:
            continue
        when, text = datetime.strptime(m.group(1), "%m/%d/%y %H:%M:%S"), m.group(2)
        if START.search(text):
            started, speeds, spans_evaluation = when, [], bool(epochs)
        elif END.search(text):
            ended = when
        elif (p := PROGRESS.match(text)):
            updates = int(p.group(1))
            if not spans_evaluation:
                speeds.append(float(p.group(2)))
            spans_evaluation = False
        elif (scores := logged_scores(text, path, line_no)) is not None:
            timing = {"train_s": (ended - started).total_seconds() if started and ended else None,
                      "eval_s": (when - ended).total_seconds() if ended else None,
                      "updates": updates, "words/s": sum(speeds) / len(speeds) if speeds else None}
            epochs.append({**timing, **scores})
    if not epochs:
        raise DataError(f"{path}: no __log__ line (no finished epoch)")
    return epochs


def table(runs, labels, wanted):
    """Rows metric x run, columns epochs; a DataError for a `wanted` substring that no metric contains."""
    keys = [k for run in runs for e in run for k in e]
    known = [k for k in dict.fromkeys(keys) if k != "epoch"]
    for w in wanted:
        if not any(w in k for k in known):
            raise DataError(f"--metrics {w}: no metric of the logs contains it (they have: {', '.join(known)})")
    metrics = [k for k in known if (any(w in k for w in wanted) if wanted else k.startswith("valid_"))]
    timing = ["train_s", "eval_s", "updates", "words/s"]
    n_epochs = max(len(run) for run in runs)
    width = max(len(k) for k in timing + metrics)
    lines = [f"{'':{width}}  {'run':8}" + "".join(f"{'epoch ' + str(i):>12}" for i in range(n_epochs))]
    for key in timing + [m for m in metrics if m not in timing]:
        for j, (run, label) in enumerate(zip(runs, labels)):
            cells = [e.get(key) for e in run] + [None] * (n_epochs - len(run))
            lines.append(f"{key if j == 0 else '':{width}}  {label:8}" + "".join(
                f"{'-':>12}" if v is None else f"{v:12d}" if isinstance(v, int) else f"{v:12.2f}" for v in cells))
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("logs", nargs="+", help="train.log files")
    parser.add_argument("--labels", default="", help="comma-separated run names (default: run1, run2, ...)")
    parser.add_argument("--metrics", default="", help="comma-separated substrings of metric names")
    args = parser.parse_args()
    check_streams("stdout")
    labels = args.labels.split(",") if args.labels else [f"run{i + 1}" for i in range(len(args.logs))]
    if len(labels) != len(args.logs):
        raise DataError(f"--labels: {len(labels)} names for {len(args.logs)} logs")
    runs = [read_log(path) for path in args.logs]
    print(table(runs, labels, [w for w in args.metrics.split(",") if w]))


if __name__ == "__main__":
    try:
        main()
    except DataError as e:
        sys.exit(f"error: {e}")
