#!/usr/bin/env python3
"""Mean ± sample standard deviation over seeds, as a Markdown table, from the runs' own outputs.

Each cell of a toy reproduction is run once per seed; this reads, for every row and seed, either a
train.log (the `__log__:` score lines that train.py and glue-xnli.py write: the last one, or the one
with the best `--best` metric) or a JSON file of scores (tools/embedding_alignment.py's output), and
prints one Markdown row per row name, one column per metric, each cell `mean ± sd` (sd with n - 1;
a single seed prints the value alone). `--json` also writes every per-seed value.

    python tools/seed_table.py --seeds 3 --columns valid_la-lb_mt_bleu=la→lb,test_la-lb_mt_bleu \\
        --json results.json 'random=/tmp/out/seed{seed}/random/train.log' 'MLM=...'
"""
import argparse
import json
import math
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from xlm.fileio import DataError, atomic_write, check_output  # noqa: E402
from xlm.train.logging import logged_scores  # noqa: E402


def mean_sd(values):
    """Mean and sample standard deviation (None for a single value)."""
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else None
    return mean, sd


def format_cell(values, digits):
    mean, sd = mean_sd(values)
    return f"{mean:.{digits}f}" if sd is None else f"{mean:.{digits}f} ± {sd:.{digits}f}"


def log_scores(path):
    """The score dicts of a train.log, in order."""
    scores = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if (line_scores := logged_scores(line, path, line_no)) is not None:
                scores.append(line_scores)
    if not scores:
        raise DataError(f"{path}: no __log__ score line (did the run finish an epoch?)")
    return scores


def read_scores(path, best=None, lowest=False):
    """One dict of scores: a JSON file's object, or a train.log's last epoch, or its epoch with the
    highest (`lowest`: the lowest) value of `best`."""
    if path.endswith(".json"):
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    scores = log_scores(path)
    if best is None:
        return scores[-1]
    missing = [i for i, s in enumerate(scores) if best not in s]
    if missing:
        raise DataError(f"{path}: no {best} in the scores of epoch line {missing[0] + 1}")
    return (min if lowest else max)(scores, key=lambda s: s[best])


def collect(rows, columns, seeds, best=None, lowest=False):
    """{row: {column: [value of seed 1, ..., seed n]}} from `rows`: (name, path template with {seed})."""
    table = {}
    for name, template in rows:
        table[name] = {c: [] for c in columns}
        for seed in seeds:
            path = template.format(seed=seed)
            if not os.path.isfile(path):
                raise DataError(f"{path}: missing (row {name}, seed {seed})")
            scores = read_scores(path, best, lowest)
            for c in columns:
                if c not in scores:
                    raise DataError(f"{path}: no metric {c} (has {', '.join(sorted(scores))})")
                table[name][c].append(float(scores[c]))
    return table


def markdown(table, columns, labels, first="", digits=2):
    lines = ["| " + " | ".join([first] + [labels.get(c, c) for c in columns]) + " |",
             "|" + "---|" * (len(columns) + 1)]
    for name, cells in table.items():
        lines.append("| " + " | ".join([name] + [format_cell(cells[c], digits) for c in columns]) + " |")
    return "\n".join(lines)


def parse_pairs(text, what):
    out = []
    for item in text:
        if "=" not in item:
            raise DataError(f"{what} {item!r}: expected NAME=VALUE")
        out.append(tuple(item.split("=", 1)))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("rows", nargs="+", help="NAME=PATH, PATH with {seed} (a train.log or a .json of scores)")
    p.add_argument("--columns", required=True, help="comma-separated METRIC or METRIC=LABEL")
    p.add_argument("--seeds", type=int, default=3, help="seeds 1..SEEDS")
    p.add_argument("--best", default=None, help="take the epoch with the highest value of this metric")
    p.add_argument("--lowest", action="store_true", help="--best takes the lowest value (a perplexity)")
    p.add_argument("--first", default="", help="header of the row-name column")
    p.add_argument("--digits", type=int, default=2)
    p.add_argument("--json", default=None, help="write the per-seed values here")
    a = p.parse_args(argv)
    try:
        cols = [c.split("=", 1) if "=" in c else [c, c] for c in a.columns.split(",") if c]
        columns, labels = [c for c, _ in cols], dict(cols)
        rows = parse_pairs(a.rows, "row")
        if a.seeds < 1:
            raise DataError(f"--seeds {a.seeds}: need at least 1")
        if a.digits < 0:
            raise DataError(f"--digits {a.digits}: need at least 0")
        if a.json:
            check_output(a.json)  # before the logs are read
        seeds = list(range(1, a.seeds + 1))
        table = collect(rows, columns, seeds, a.best, a.lowest)
    except (DataError, OSError, ValueError) as e:
        print(f"seed_table.py: {e}", file=sys.stderr)
        return 1
    print(markdown(table, columns, labels, a.first, a.digits))
    if a.json:
        summary = {"seeds": seeds, "best": a.best, "lowest": a.lowest, "rows": {
            name: {c: {"values": v, "mean": mean_sd(v)[0], "sd": mean_sd(v)[1]} for c, v in cells.items()}
            for name, cells in table.items()}}
        with atomic_write(a.json, "w") as f:
            json.dump(summary, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
