#!/usr/bin/env python
"""stdin to stdout: lower-case and strip accents exactly like the original XLM tool."""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from xlm.data.tokenize import lowercase_and_remove_accent  # noqa: E402
from xlm.fileio import DataError, check_streams, decode_utf8, writing_stdout  # noqa: E402

argparse.ArgumentParser(description=__doc__ + "\n\n    python tools/lowercase_and_remove_accent.py < IN > OUT",
                        formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
try:
    check_streams("stdin", "stdout")
    with writing_stdout():
        for line_no, raw in enumerate(sys.stdin.buffer, 1):
            sys.stdout.write(lowercase_and_remove_accent(decode_utf8(raw, "<stdin>", line_no)) + "\n")
except DataError as e:
    sys.exit(f"error: {e}")
