"""The original XLM's data tools and xlm's, side by side on the same files: preprocess.py (the binarized
file's vocabulary, positions, sentences and unknown words must be equal, and so must the summary it
prints) and tools/lowercase_and_remove_accent.py (the same output bytes).

Texts: a real corpus (the sample's French side of en-fr, or --text); the same with awkward lines added
(literal special tokens, <unk>, no-break spaces inside words, control characters, U+2028, a Windows line
end, blank lines); blank lines alone; a lone carriage return (an expected difference, see below).
Vocabularies: the lines the released ones have and both skip; then those the original accepts but should
not (a duplicate word, a line of three fields, a count that increases) or stops on with a traceback,
expected differences: xlm refuses them with one line naming the file and line.
Prints one JSON object; exit status 1 if any case differs from what is expected.

    python -m bench.compare_data [--original /work/orig-cpu] [--text T --vocab V] [--keep DIR]
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time

import numpy as np

from bench.compare_flags import ORIGINAL, REPO, work_folder
from bench.data_pipeline import cpu_model
from xlm.data.binarized import load_binarized

SAMPLE = os.path.join(REPO, "data", "processed", "sample")
AWKWARD = ("the </s> cat <s> sat <pad> on <special3> the <unk> mat\n"
           "\n"
           "  trailing   spaces   \n"
           "no\u00a0break spaces\u00a0inside words\n"
           "a\x00nul and a\x07bell\n"
           "line\u2028separator and\x85next line\x1ffile\n"
           "windows line end\r\n"
           "\t\n"
           "caf\u00e9 cafe\u0301 \U0001f600\n")
# vocabularies: the name, their text, and the reason if the original accepts what xlm refuses (or fails)
VOCAB_CASES = {
    "skipped_lines": ("a 9\nb\u2028c 8\nno\u00a0break 7\nd 6\n", None),
    "duplicate_word": ("a 9\nb 8\na 7\n", "the original skips the second 'a' and prints a line"),
    "three_fields": ("a 9\nb 8 8\nc 7\n", "the original skips the line silently"),
    "one_field": ("a 9\nb\nc 7\n", "the original skips the line silently"),
    "count_increases_last": ("a 9\nb 8\nc 10\n", "the original does not check the last word's count"),
    "count_not_a_number": ("a 9\nb x\n", "the original stops on an AssertionError"),
    "bad_utf8": (b"a 9\n\xff 8\n", "the original stops on a UnicodeDecodeError"),
}


def run(command, cwd, args, stdin=None):
    start = time.perf_counter()
    p = subprocess.run(command + args, cwd=cwd, input=stdin, capture_output=True)
    output = (p.stdout + p.stderr).decode("utf-8", "replace")
    return p, output, round(time.perf_counter() - start, 2)


def summary(output):
    """The summary lines preprocess.py prints (the original's through its logger, prefix dropped)."""
    lines = [re.sub(r"^INFO - .* - \d+:\d\d:\d\d - ", "", line) for line in output.splitlines()]
    return [line for line in lines if re.search(r"words \(\d+ unique\)", line) or re.fullmatch(r".+: \d+", line)]


def contents(path):
    """The binarized file as plain values, read without unpickling arbitrary objects."""
    corpus = load_binarized(path)
    return {"words": [corpus.dico[i] for i in range(len(corpus.dico))], "positions": np.asarray(corpus.positions),
            "sentences": np.asarray(corpus.sentences), "unk_words": dict(corpus.unk_words),
            "dtype": str(np.asarray(corpus.sentences).dtype)}


def equal_contents(a, b):
    return all(np.array_equal(a[k], b[k]) if isinstance(a[k], np.ndarray) else a[k] == b[k] for k in a)


def preprocess_case(original, vocab, text, tmp, name):
    """Both preprocess.py on copies of one text; the original writes TEXT.pth, so each side has its own."""
    result = {}
    outputs = {}
    for side, command, cwd in (("original", ORIGINAL + ["preprocess.py"], original),
                               ("xlm", [sys.executable, "preprocess.py", "--format", "original"], REPO)):
        copy = shutil.copyfile(text, os.path.join(tmp, f"{name}.{side}.txt"))
        p, output, seconds = run(command, cwd, [vocab, copy])
        outputs[side] = copy + ".pth" if p.returncode == 0 else None
        result[side] = {"rc": p.returncode, "seconds": seconds, "summary": summary(output),
                        "last_line": (output.strip().splitlines() or [""])[-1][-300:]}
    if outputs["original"] and outputs["xlm"]:
        result["same_contents"] = equal_contents(contents(outputs["original"]), contents(outputs["xlm"]))
    result["same"] = (result["original"]["rc"] == result["xlm"]["rc"] == 0 and result["same_contents"]
                      and result["original"]["summary"] == result["xlm"]["summary"])
    return result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--original", default="/work/orig-cpu", help="the original XLM, patched for the CPU")
    parser.add_argument("--text", default=os.path.join(SAMPLE, "train.en-fr.fr"), help="a tokenized, BPE'd text")
    parser.add_argument("--vocab", default=os.path.join(SAMPLE, "vocab"), help="its vocabulary")
    parser.add_argument("--keep", help="work in this folder and keep it; by default a temporary folder")
    args = parser.parse_args()
    if not os.path.isfile(os.path.join(args.original, "preprocess.py")):
        sys.exit(f"--original {args.original}: no preprocess.py there")
    for path in (args.text, args.vocab):
        if not os.path.isfile(path):
            sys.exit(f"{path}: no such file (run `PRETRAIN=0 bash run-sample.sh` first)")
    result = {"benchmark": "compare_data", "command": "python -m bench.compare_data " + " ".join(sys.argv[1:]),
              "original": os.path.abspath(args.original), "device_name": cpu_model(), "cases": {}}
    with work_folder(args.keep) as tmp:
        vocab, text = os.path.abspath(args.vocab), os.path.abspath(args.text)
        awkward = os.path.join(tmp, "awkward.txt")
        with open(text, "rb") as f, open(awkward, "wb") as g:
            g.write(f.read() + AWKWARD.encode("utf-8"))
        blanks = os.path.join(tmp, "blanks.txt")
        with open(blanks, "w") as f:
            f.write("\n\n\n")
        cases = result["cases"]
        cases["corpus"] = preprocess_case(args.original, vocab, text, tmp, "corpus")
        cases["awkward_lines"] = preprocess_case(args.original, vocab, awkward, tmp, "awkward")
        cases["blank_lines"] = preprocess_case(args.original, vocab, blanks, tmp, "blanks")
        # the original reads text files in Python's universal-newline mode: a lone \r ends a line there, so a
        # sentence splits in two and the file no longer lines up with its other side, its labels or fastBPE's
        # output (all split on \n alone); xlm splits on \n (\r\n and a \r inside a line are whitespace)
        carriage = os.path.join(tmp, "carriage_return.txt")
        with open(carriage, "wb") as f:
            f.write(b"the cat\rsat\non the\r\nmat\n")
        case = cases["lone_carriage_return"] = preprocess_case(args.original, vocab, carriage, tmp, "carriage")
        case["expected"] = "the original reads 4 sentences, xlm 3 (the lines of the file)"
        case["same"] = ([line.split(" in ")[-1] for line in (case["original"]["summary"][0], case["xlm"]["summary"][0])]
                        == ["4 sentences.", "3 sentences."])
        small = os.path.join(tmp, "small.txt")
        with open(small, "w", encoding="utf-8") as f:
            f.write("a b c d\nd c e\nno break\n")
        for name, (content, difference) in VOCAB_CASES.items():
            path = os.path.join(tmp, f"vocab.{name}")
            with open(path, "wb") as f:
                f.write(content if isinstance(content, bytes) else content.encode("utf-8"))
            case = cases[f"vocab_{name}"] = preprocess_case(args.original, path, small, tmp, name)
            if difference:
                xlm_error = case["xlm"]["last_line"]
                case["expected"] = f"xlm refuses it ({xlm_error!r}); {difference}"
                case["same"] = case["xlm"]["rc"] != 0 and xlm_error.startswith("error: " + path)
        # the lower-casing and accent removal of the XNLI-15 and English models, on the same bytes
        lowercase = {}
        for side, cwd in (("original", args.original), ("xlm", REPO)):
            with open(awkward, "rb") as f:
                p, _, seconds = run(ORIGINAL if side == "original" else [sys.executable],
                                    cwd, ["tools/lowercase_and_remove_accent.py"], stdin=f.read())
            lowercase[side] = (p.returncode, p.stdout, seconds)
        cases["lowercase_and_remove_accent"] = {
            "rc": [lowercase["original"][0], lowercase["xlm"][0]],
            "seconds": [lowercase["original"][2], lowercase["xlm"][2]],
            "same": lowercase["original"][:2] == lowercase["xlm"][:2]}
    for name, case in cases.items():
        print(f"{name}: {'as expected' if case['same'] else 'DIFFERENT'}", file=sys.stderr, flush=True)
    result["all_as_expected"] = all(case["same"] for case in cases.values())
    print(json.dumps(result, indent=1))
    sys.exit(0 if result["all_as_expected"] else 1)


if __name__ == "__main__":
    main()
