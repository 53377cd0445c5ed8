"""Convert checkpoints to and from Hugging Face transformers' XLM.

    python -m xlm.convert to-hf CKPT OUT_DIR [--causal]
    python -m xlm.convert from-hf HF_DIR OUT.pth
"""
import argparse
import sys

from .fileio import DataError, exit_on_signals
from .model.hf import from_hf, to_hf


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("to-hf", help="xlm / original XLM checkpoint -> HF XLMWithLMHeadModel folder")
    p.add_argument("checkpoint")
    p.add_argument("out_dir")
    p.add_argument("--causal", action="store_true", help="mark the HF model causal (a CLM-trained model); a "
                   "checkpoint converted from a causal HF model stays causal without it")
    p = sub.add_parser("from-hf", help="HF XLM folder (with vocab.json) -> checkpoint in the original layout")
    p.add_argument("hf_dir")
    p.add_argument("out")
    args = parser.parse_args(argv)
    try:
        if args.command == "to-hf":
            to_hf(args.checkpoint, args.out_dir, causal=args.causal)
            print(f"wrote {args.out_dir}")
        else:
            from_hf(args.hf_dir, args.out)
            print(f"wrote {args.out}")
    except DataError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    exit_on_signals()  # SIGTERM, SIGINT, SIGHUP: SystemExit, so that a temporary output is removed
    main()
