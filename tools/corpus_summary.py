#!/usr/bin/env python
"""Print one line per binarized corpus (*.pth) in a folder: sentences, words, unknown words."""
import argparse
import glob
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from xlm.data.binarized import load_binarized  # noqa: E402
from xlm.fileio import DataError  # noqa: E402


def main(folder):
    """The table; a corpus that cannot be read is an error line in its place, and the exit status 1."""
    if not os.path.isdir(folder):
        raise DataError(f"{folder}: no such folder" if not os.path.exists(folder) else f"{folder}: not a folder")
    paths = sorted(glob.glob(os.path.join(folder, "*.pth")))
    if not paths:
        raise DataError(f"{folder}: no .pth files")
    print(f"{'corpus':<24} {'sentences':>10} {'words':>10} {'unknown':>8} {'vocab':>7}")
    failed = 0
    for path in paths:
        try:
            c = load_binarized(path)
        except DataError as e:
            print(f"error: {e}", file=sys.stderr, flush=True)
            failed += 1
            continue
        print(f"{os.path.basename(path):<24} {len(c):>10} {c.n_words:>10} {100 * c.n_unk / max(c.n_words, 1):>7.2f}% "
              f"{len(c.dico):>7}", flush=True)
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("folder", metavar="FOLDER", help="a folder of binarized corpora, as preprocess.py writes")
    args = parser.parse_args()
    try:
        main(args.folder)
    except DataError as e:
        sys.exit(f"error: {e}")
