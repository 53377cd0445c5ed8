"""The text of each <seg> element of an SGML test set (WMT's .sgm files), a line each, by the rules of
Moses' input-from-sgm.perl, which the original XLM's get-data-nmt.sh runs:

- an element whose text runs over several lines is read whole, the lines joined with nothing between them;
- an empty element gives an empty line, so that the two sides of a test set stay aligned;
- runs of ASCII whitespace become one space, and none is left at either end.

    python tools/input_from_sgm.py < newstest2013-ref.en.sgm > valid.en

Bytes in, bytes out, as the Perl script reads them: the tokenizer after it checks the UTF-8.
"""
import re
import sys

OPENED = re.compile(rb"<seg[^>]+>", re.IGNORECASE)
ELEMENT = re.compile(rb"<seg[^>]+>\s*(.*)\s*</seg>", re.IGNORECASE)  # greedy: to the line's last </seg>


def segments(lines):
    """The text of each element of lines (bytes, with or without their b'\\n')."""
    lines = iter(lines)
    for line in lines:
        line = line.removesuffix(b"\n")
        while OPENED.search(line) and not ELEMENT.search(line):
            more = next(lines, None)
            if more is None:  # an element the file leaves open: no text
                break
            line += more.removesuffix(b"\n")
        element = ELEMENT.search(line)
        if element:
            yield re.sub(rb"\s+", b" ", element.group(1)).strip(b" ")


def main():
    out = sys.stdout.buffer
    for text in segments(sys.stdin.buffer):
        out.write(text + b"\n")


if __name__ == "__main__":
    main()
