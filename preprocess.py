#!/usr/bin/env python
"""Binarize a tokenized (and BPE'd) text file against a vocabulary.

    python preprocess.py VOCAB INPUT [OUTPUT]

writes OUTPUT (default INPUT.pth, the original XLM's name) in xlm's memory-friendly format, or with
--format original in the original's torch.save layout. As in the original, an existing output is not
rebuilt: it is loaded, checked against the vocabulary, and summarised. What it says goes to stderr, as the
original's log.
"""
import argparse
import logging
import os
import sys
import time

from xlm.data.binarized import binarize, load_binarized, save_original
from xlm.data.dictionary import Dictionary
from xlm.fileio import DataError, check_file, check_output, exit_on_signals, remove_stale_tmp


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("vocab", help="vocabulary file, 'WORD COUNT' per line (fastBPE getvocab)")
    parser.add_argument("input", help="tokenized text, one sentence per line")
    parser.add_argument("output", nargs="?", help="output path (default: INPUT.pth)")
    parser.add_argument("--format", choices=["xlm", "original"], default="xlm",
                        help="xlm: read on demand, constant memory (default); original: the original XLM's .pth")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="worker processes (default: all cores)")
    args = parser.parse_args(argv)
    if args.threads < 1:
        raise DataError(f"--threads must be at least 1, got {args.threads}")
    logging.basicConfig(format="%(levelname)s - %(message)s", level=logging.INFO)
    output = args.output or args.input + ".pth"
    for flag in ("input", "vocab"):
        if os.path.realpath(output) == os.path.realpath(getattr(args, flag)):
            raise DataError(f"the output {output} is the {flag}: name another file")
    intermediate = output + ".xlmbin.tmp"  # --format original binarizes in ours first

    if not os.path.exists(output):
        check_file(args.input)
        check_output(output)
        # what a run killed by SIGKILL left behind
        remove_stale_tmp(output)
        remove_stale_tmp(intermediate)
        if os.path.exists(intermediate):
            os.remove(intermediate)
    dico = Dictionary.read_vocab(args.vocab)
    if os.path.exists(output):
        corpus = load_binarized(output)
        if corpus.dico != dico:
            raise DataError(f"{output} exists and was binarized with a different vocabulary than {args.vocab}")
        logging.info("%s already exists, not rebuilt.", output)
    else:
        start = time.perf_counter()
        if args.format == "original":
            try:
                save_original(binarize(args.input, dico, intermediate, args.threads), output)
            finally:
                if os.path.exists(intermediate):
                    os.remove(intermediate)
        else:
            binarize(args.input, dico, output, args.threads)
        corpus = load_binarized(output)
        seconds = time.perf_counter() - start
        logging.info("Saved %s in %.1fs (%.0f lines/s).", output, seconds, len(corpus) / seconds)
    for line in corpus.summary().splitlines():
        logging.info(line)


if __name__ == "__main__":
    exit_on_signals()
    try:
        main()
    except DataError as e:
        sys.exit(f"error: {e}")
