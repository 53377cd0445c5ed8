#!/usr/bin/env python
"""BLEU of a translation file against its reference: the score the original's evaluation logs, and the
detokenized score papers report today.

    python tools/bleu.py HYPOTHESES REFERENCE [--lang fr]

HYPOTHESES: one translation per line, as translate.py writes them (BPE'd or not: BPE is removed, as the
original's evaluation writes its hypothesis files; `<unk>` stays, and matches no word). REFERENCE: the
tokenized reference, e.g. the `hypotheses/ref.en-fr.test.txt` every training run writes. Prints
multi-bleu.perl's tokenized BLEU (`valid_en-fr_mt_bleu` in train.log), and with --lang the BLEU of the
Moses-detokenized lines by sacrebleu's defaults, with its signature.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from xlm.data.bpe import remove_bpe  # noqa: E402
from xlm.evaluation.bleu import detokenized_bleu, tokenized_bleu  # noqa: E402
from xlm.fileio import DataError, check_streams, read_lines  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("hypotheses")
    parser.add_argument("reference")
    parser.add_argument("--lang", help="the target language (Moses' detokenizer rules): also the detokenized BLEU")
    args = parser.parse_args()
    check_streams("stdout")
    hypotheses = [remove_bpe(line.rstrip("\r")) for line in read_lines(args.hypotheses)]
    references = [remove_bpe(line.rstrip("\r")) for line in read_lines(args.reference)]
    if len(hypotheses) != len(references):
        raise DataError(f"{args.hypotheses}: {len(hypotheses)} lines, but {args.reference} has {len(references)}")
    # multi-bleu.perl fails where a side has no word: it exits 1 on such references, and divides by zero on
    # such hypotheses (the original's evaluation then logs -1), which sacrebleu scores 0
    if not any(line.split() for line in references):
        raise DataError(f"{args.reference}: no word in any of its {len(references)} lines, nothing to score against")
    if any(line.split() for line in hypotheses):
        score = tokenized_bleu(hypotheses, references)
    else:
        score = 0.0
        print(f"warning: {args.hypotheses}: no word in any of its {len(hypotheses)} lines (the original's "
              "evaluation logs -1 for them)", file=sys.stderr)
    print(f"BLEU = {score:.2f} (tokenized, multi-bleu.perl's; {len(hypotheses)} sentences)")
    if args.lang:
        score, signature = detokenized_bleu(hypotheses, references, args.lang)
        print(f"BLEU = {score:.2f} (detokenized, sacrebleu {signature})")


if __name__ == "__main__":
    try:
        main()
    except DataError as e:
        sys.exit(f"error: {e}")
