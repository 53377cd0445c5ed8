import io
import os
import re
import subprocess
from collections import Counter

import pytest

from conftest import ROOT, SAMPLE, python, run
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
    converted.write_text("#version: 0.2\n" + "".join(" ".join(line.split()[:2]) + "\n" for line in open(codes)))
    args = ["subword-nmt", "apply-bpe", "-c", str(converted), "--input", str(text_path)]
    return run(args + (["--vocabulary", str(vocab)] if vocab else [])).stdout


def test_learned_codes_are_fastbpe_format(codes, tokenized_file):
    lines = codes.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 500
    merges = [line.split(" ") for line in lines]
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
    assert [bpe.remove_bpe(line) for line in streamed.splitlines()] == [" ".join(line.split())
                                                                        for line in text.splitlines()]


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
    # fastBPE aborts on an assert for these; tools/fastbpe says what is wrong, with or without it
    (tmp_path / "dup").write_text("a b 5\nab c 4\na bc 3\n", encoding="utf-8")
    (tmp_path / "vocab").write_text("ab@@ 3\nc\n", encoding="utf-8")
    (tmp_path / "text").write_text("abc\n", encoding="utf-8")
    for env in ({}, {"FASTBPE": ""}):
        proc = fastbpe(["applybpe_stream", tmp_path / "dup"], "abc\n", env, check=False)
        assert proc.returncode == 1 and "dup:3: the merge 'a bc' makes a subword made earlier" in proc.stderr
        proc = fastbpe(["applybpe", tmp_path / "o", tmp_path / "text", tmp_path / "good", tmp_path / "vocab"],
                       None, env, check=False)
        assert proc.returncode == 1 and "vocab:2: expected 'TOKEN COUNT'" in proc.stderr


# ----------------------------------------------------------------------------- the compiled fastBPE

FAST = ROOT / "tools" / "fastBPE" / "fast"


@pytest.fixture(scope="module")
def fast():
    """The original's tool, built by tools/install_fastbpe.sh (a no-op once built)."""
    run(["bash", "tools/install_fastbpe.sh"])
    if not os.access(FAST, os.X_OK):
        pytest.skip("fastBPE could not be built here (no g++ or no pip access)")
    return FAST


def fastbpe(args, stdin, env, check=True):
    """tools/fastbpe with `env` (FASTBPE="" runs the Python implementation); stdout as bytes."""
    proc = subprocess.run(["python", "tools/fastbpe", *map(str, args)], input=stdin and stdin.encode(),
                          capture_output=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), **env})
    proc.stderr = proc.stderr.decode()
    assert proc.returncode == 0 or not check, proc.stderr
    return proc


def python_bytes(write, items):
    f = io.StringIO()
    write(items, f)
    return f.getvalue().encode("utf-8")


def original(fast, *args, stdin=None):
    return subprocess.run([fast, *map(str, args)], input=stdin, capture_output=True, check=True).stdout


TRICKY = [
    "a  b\t c\n\n  ab ab\tab\n \n",            # doubled, leading and trailing spaces, tabs, empty lines
    "été 日本語 日本 été été\nüber\r\nnaïve ü\n",  # unicode, a carriage return inside a word
    "ab ba ab ba cd dc cd dc\nx y\n",            # ties in pair counts and in the vocabulary
    "aaaa aaa aa a </w> a@@b\n",                 # overlapping pairs, literal markers
    "no final newline here here",                # fastBPE drops the last word of a file
]


def compare_all(fast, tmp_path, texts, n_codes, cli=False):
    """learnbpe, getvocab, applybpe (with and without a vocabulary) and applybpe_stream: the original
    tool and the Python implementation give the same bytes."""
    files = []
    for i, text in enumerate(texts):
        files.append(tmp_path / f"in{i}")
        files[-1].write_bytes(text.encode("utf-8"))
    pair = files[:2]  # the original takes one or two files
    codes = original(fast, "learnbpe", n_codes, *pair)
    vocab = original(fast, "getvocab", *pair)
    # past the last possible merge fastBPE repeats one, which its applybpe refuses: apply the rest
    merges = {}
    for line in codes.split(b"\n")[:-1]:
        merges.setdefault(b"".join(line.split(b" ")[:2]), line + b"\n")
    (tmp_path / "codes").write_bytes(b"".join(merges.values()))
    (tmp_path / "vocab").write_bytes(b"".join(line + b"\n" for line in vocab.split(b"\n")[:-1:2]))  # half the words
    stream_in = b"".join(f.read_bytes() for f in files)
    expected = {"stream": original(fast, "applybpe_stream", tmp_path / "codes", stdin=stream_in),
                "stream_v": original(fast, "applybpe_stream", tmp_path / "codes", tmp_path / "vocab", stdin=stream_in)}
    for name, vocab_args in (("out", []), ("out_v", [tmp_path / "vocab"])):
        original(fast, "applybpe", tmp_path / name, files[0], tmp_path / "codes", *vocab_args)
        expected[name] = (tmp_path / name).read_bytes()
    assert python_bytes(bpe.write_codes, bpe.learn_bpe(pair, n_codes)) == codes
    assert python_bytes(bpe.write_vocab, bpe.get_vocab(pair)) == vocab
    for name, vocab_args in (("out", []), ("out_v", [tmp_path / "vocab"])):
        bpe.apply_bpe_file(files[0], tmp_path / f"mine.{name}", tmp_path / "codes", *vocab_args)
        assert (tmp_path / f"mine.{name}").read_bytes() == expected[name], name
        out = io.BytesIO()
        bpe.apply_bpe_stream(io.BytesIO(stream_in), out, tmp_path / "codes", *vocab_args)
        assert out.getvalue() == expected["stream" + name[3:]], name
    if cli:  # tools/fastbpe on the original tool and on the Python implementation, more files than 2 too
        for env in ({}, {"FASTBPE": ""}):
            assert fastbpe(["learnbpe", n_codes, *pair], None, env).stdout == codes, env
            assert fastbpe(["applybpe_stream", tmp_path / "codes", tmp_path / "vocab"], stream_in.decode(),
                           env).stdout == expected["stream_v"]
            fastbpe(["applybpe", tmp_path / "mine", files[0], tmp_path / "codes", tmp_path / "vocab"], None, env)
            assert (tmp_path / "mine").read_bytes() == expected["out_v"], env
        both = [fastbpe(["learnbpe", n_codes, *files], None, env).stdout for env in ({}, {"FASTBPE": ""})]
        assert both[0] == both[1]
        vocabs = [fastbpe(["getvocab", *files], None, env).stdout for env in ({}, {"FASTBPE": ""})]
        assert vocabs[0] == vocabs[1] == original(fast, "getvocab", "-", stdin=stream_in)
    return codes


def test_same_bytes_as_fastbpe_on_the_sample(fast, tmp_path):
    texts = [open(SAMPLE / "mono" / f"train.{lg}", encoding="utf-8").read()[:size]
             for lg, size in (("en", 80_000), ("fr", 50_000), ("de", 20_000))]
    texts = [t[:t.rindex("\n") + 1] for t in texts]
    codes = compare_all(fast, tmp_path, texts, 800, cli=True)
    counts = [int(line.split(b" ")[2]) for line in codes.split(b"\n")[:-1]]
    assert len(counts) == 800 and counts[-1] > 1 and len(set(counts[-300:])) < 30  # many ties were broken


def test_same_bytes_as_fastbpe_on_tricky_text(fast, tmp_path):
    for text in TRICKY:
        compare_all(fast, tmp_path, [text, TRICKY[2], TRICKY[0]], 40)  # more codes than pairs: fastBPE repeats one


def test_learnbpe_stops_at_the_last_pair_that_occurs(fast, tmp_path):
    """Asked for more codes than the text has pairs to merge, fastBPE goes on with merges of count 0, one of
    them repeated, and its own applybpe aborts on those codes: tools/fastbpe writes the codes up to the
    last merge that counts, with a warning, and they apply."""
    (tmp_path / "text").write_text("low lower lowest\nnew newer\n", encoding="utf-8")
    full = original(fast, "learnbpe", 40, tmp_path / "text").decode().splitlines()
    counted = [line for line in full if not line.endswith(" 0")]
    assert len(full) == 40 and 0 < len(counted) < 40
    for env in ({}, {"FASTBPE": ""}):
        proc = fastbpe(["learnbpe", 40, tmp_path / "text"], None, env)
        assert proc.stdout.decode().splitlines() == counted, env
        assert f"has {len(counted)} pairs to merge, fewer than the 40 codes asked for" in proc.stderr
        (tmp_path / "codes").write_bytes(proc.stdout)
        assert fastbpe(["applybpe_stream", tmp_path / "codes"], "lowest newer\n", env).stdout == b"lowest newer\n"


def test_python_order_of_the_cpp_word_map(fast, tmp_path):
    """Ties go to the symbols seen first when iterating fastBPE's std::unordered_map of words: with
    the words in a different order the learned codes differ, and the emulation follows."""
    words = [f"{a}{b}" for a in "klmnopqrst" for b in "uvwxyz"]
    for order in (words, words[::-1]):
        compare_all(fast, tmp_path, [" ".join(order) + "\n"], 30)
