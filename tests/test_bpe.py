import re
from collections import Counter

import pytest

from conftest import python, run
from xlm.data import bpe
from xlm.fileio import DataError


@pytest.fixture(scope="module")
def codes(tmp_path_factory, tokenized_file):
    path = tmp_path_factory.mktemp("bpe") / "codes"
    path.write_text(python("tools/fastbpe", "learnbpe", 500, tokenized_file).stdout, encoding="utf-8")
    return path


def subword_nmt(codes, text_path, tmp_path, vocab=None):
    """subword-nmt's own command line on the same codes (converted to its two-column format)."""
    converted = tmp_path / "codes.subword-nmt"
    converted.write_text("#version: 0.2\n" + "".join(" ".join(l.split()[:2]) + "\n" for l in open(codes)))
    args = ["subword-nmt", "apply-bpe", "-c", str(converted), "--input", str(text_path)]
    return run(args + (["--vocabulary", str(vocab)] if vocab else [])).stdout


def test_learned_codes_are_fastbpe_format(codes, tokenized_file):
    lines = codes.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 500
    merges = [l.split(" ") for l in lines]
    assert all(len(m) == 3 and m[2].isdigit() for m in merges)
    counts = [int(m[2]) for m in merges]
    assert counts == sorted(counts, reverse=True)  # greedy learning: pair frequencies never increase
    # the first merge is the most frequent adjacent pair of symbols, with its exact frequency
    pairs = Counter()
    for word, n in Counter(tokenized_file.read_text(encoding="utf-8").split()).items():
        symbols = list(word[:-1]) + [word[-1] + "</w>"]
        for p in zip(symbols, symbols[1:]):
            pairs[p] += n
    assert counts[0] == max(pairs.values()) and pairs[tuple(merges[0][:2])] == counts[0]


def test_apply_is_byte_identical_to_subword_nmt(codes, tokenized_file, tmp_path):
    out = tmp_path / "train.bpe"
    python("tools/fastbpe", "applybpe", out, tokenized_file, codes)
    assert out.read_bytes() == subword_nmt(codes, tokenized_file, tmp_path).encode("utf-8")
    # with a vocabulary (fastBPE's 4th argument), rare subwords are split back into known ones
    vocab = tmp_path / "vocab"
    vocab.write_text("".join(f"{w} {c}\n" for w, c in bpe.get_vocab([out]) if c >= 3), encoding="utf-8")
    out_v = tmp_path / "train.bpe.v"
    python("tools/fastbpe", "applybpe", out_v, tokenized_file, codes, vocab)
    assert out_v.read_bytes() == subword_nmt(codes, tokenized_file, tmp_path, vocab).encode("utf-8")
    assert out_v.read_bytes() != out.read_bytes()


def test_stream_equals_file_and_bpe_is_reversible(codes, tokenized_file, tmp_path):
    out = tmp_path / "out"
    python("tools/fastbpe", "applybpe", out, tokenized_file, codes)
    text = tokenized_file.read_text(encoding="utf-8")
    streamed = python("tools/fastbpe", "applybpe_stream", codes, input=text).stdout
    assert streamed == out.read_text(encoding="utf-8")
    assert [bpe.remove_bpe(l) for l in streamed.splitlines()] == [" ".join(l.split()) for l in text.splitlines()]


def test_getvocab_is_sorted_by_count(tmp_path):
    (tmp_path / "a").write_text("b a@@ c\na@@ c\n", encoding="utf-8")
    (tmp_path / "b").write_text("c z\n", encoding="utf-8")
    out = python("tools/fastbpe", "getvocab", tmp_path / "a", tmp_path / "b").stdout
    assert out == "c 3\na@@ 2\nb 1\nz 1\n"


def test_bad_codes_and_inputs(tmp_path):
    (tmp_path / "codes").write_text("a b 5\nbad line here now\n", encoding="utf-8")
    with pytest.raises(DataError, match="codes:2: expected 'LEFT RIGHT COUNT'"):
        bpe.read_codes(tmp_path / "codes")
    (tmp_path / "good").write_text("a b 5\n", encoding="utf-8")
    (tmp_path / "in").write_bytes(b"ok\nnot \xc3 ok\n")
    proc = python("tools/fastbpe", "applybpe", tmp_path / "out", tmp_path / "in", tmp_path / "good", check=False)
    assert proc.returncode != 0 and "in:2: invalid UTF-8" in proc.stderr
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob("out.*"))
    proc = python("tools/fastbpe", "learnbpe", 10, tmp_path / "missing", check=False)
    assert proc.returncode != 0 and re.search(r"missing: no such file", proc.stderr)
