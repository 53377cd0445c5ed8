#!/usr/bin/env python
"""Convert a binarized corpus between the original XLM's .pth layout and xlm's format.

    python tools/convert_binarized.py IN OUT --to original   # for the original code
    python tools/convert_binarized.py IN OUT --to xlm        # constant-memory reading here
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from xlm.data.binarized import load_binarized, save_original, save_ours  # noqa: E402
from xlm.fileio import DataError, check_output  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input")
    parser.add_argument("output")
    parser.add_argument("--to", choices=["original", "xlm"], required=True)
    args = parser.parse_args()
    if os.path.abspath(args.input) == os.path.abspath(args.output):
        raise DataError(f"{args.output}: output must differ from the input")
    check_output(args.output)  # before the corpus is read
    corpus = load_binarized(args.input)
    (save_original if args.to == "original" else save_ours)(corpus, args.output)
    print(f"{args.output}: {len(corpus)} sentences, {corpus.n_words} words, written in the {args.to} format")


if __name__ == "__main__":
    try:
        main()
    except DataError as e:
        sys.exit(f"error: {e}")
