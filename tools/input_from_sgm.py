"""The text of each <seg> element of an SGML test set (WMT's .sgm files), a line each, by the rules of
Moses' input-from-sgm.perl, which the original XLM's get-data-nmt.sh runs:

- an element whose text runs over several lines is read whole, the lines joined with nothing between them;
- an empty element gives an empty line, so that the two sides of a test set stay aligned;
- runs of ASCII whitespace become one space, and none is left at either end.

    python tools/input_from_sgm.py < newstest2013-ref.en.sgm > valid.en

Bytes in, bytes out, as the Perl script reads them: the tokenizer after it checks the UTF-8. An element
that the input never closes gives no line, as in the Perl script, and a warning naming the line that
opened it (every line after it is taken as its text).
"""
import argparse
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from xlm.fileio import DataError, check_streams, writing_stdout  # noqa: E402

OPENED = re.compile(rb"<seg[^>]+>", re.IGNORECASE)
CLOSED = re.compile(rb"</seg>", re.IGNORECASE)
ELEMENT = re.compile(rb"<seg[^>]+>\s*(.*)\s*</seg>", re.IGNORECASE)  # greedy: to the line's last </seg>


def segments(lines, unclosed=None):
    """The text of each element of lines (bytes, with or without their b'\\n'); unclosed(line number) is
    called for an element that the input leaves open."""
    numbered = enumerate(lines, 1)
    for line_no, line in numbered:
        line = bytearray(line.removesuffix(b"\n"))
        opened = OPENED.search(line)
        if not opened:
            continue
        # the Perl script joins lines until one </seg> follows the first opening tag; each search here
        # starts where the last ended (less a </seg> cut by the line end), so a long element stays linear
        searched = opened.end()
        while not CLOSED.search(line, searched):
            searched = max(opened.end(), len(line) - len(b"</seg>"))
            more = next(numbered, None)
            if more is None:
                if unclosed:
                    unclosed(line_no)
                break
            line += more[1].removesuffix(b"\n")
        else:  # a </seg> came: the element's text
            element = ELEMENT.search(line)
            yield re.sub(rb"\s+", b" ", element.group(1)).strip(b" ")


def warn_unclosed(line_no):
    print(f"warning: <stdin>:{line_no}: a <seg> that the input never closes: no line for it, as "
          "input-from-sgm.perl", file=sys.stderr)


def main():
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    try:
        check_streams("stdin", "stdout")
    except DataError as e:
        sys.exit(f"error: {e}")
    with writing_stdout():
        for text in segments(sys.stdin.buffer, warn_unclosed):
            sys.stdout.buffer.write(text + b"\n")


if __name__ == "__main__":
    main()
