"""Fuzz test (issue 12): preprocess.py, tools/fastbpe, translate.py and the checkpoint / binarized-file readers
fed random and damaged inputs (truncations, byte flips, NUL and invalid UTF-8 bytes, deleted or repeated
spans, files of the wrong kind, values of the wrong type, huge numbers). Every call ends in one of two ways:

  * a correct result, checked against the rule of each tool written out here (below, per tool), or
  * a command: a non-zero exit whose stderr ends with its only `error: ...` line, no traceback;
    a reader (in process, as a user calls it): exactly `xlm.fileio.DataError`;

and never hangs (each call runs under a timeout). The inputs come from `random.Random(FUZZ_SEED)`: the same
cases on every run; `FUZZ_SEED=n pytest tests/test_fuzz.py` explores others. Each failure this found is kept
as a fixed case in the REGRESSIONS lists and tests below.
"""
import json
import os
import random
import re
import signal
import subprocess
import sys
from collections import Counter
from contextlib import contextmanager

import numpy as np
import pytest
import torch

from conftest import ROOT
from xlm.data.binarized import binarize, load_binarized, save_original
from xlm.data.datasets import batch_sentences
from xlm.data.dictionary import N_RESERVED, SPECIAL_WORDS, UNK_INDEX, Dictionary
from xlm.fileio import DataError
from xlm.model.checkpoint import checkpoint_payload, load_model, save_checkpoint
from xlm.model.transformer import TransformerConfig, TransformerModel

SEED = int(os.environ.get("FUZZ_SEED", 12))
TIMEOUT = 30  # seconds a call may take before it counts as a hang (tiny inputs: each needs well under 1 s)
ENV = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")

# ----------------------------------------------------------------------------- damage

INVALID_UTF8 = [b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80", b"\xf8\x88\x80\x80\x80"]
DAMAGE = ["truncate", "flip", "nul", "invalid_utf8", "delete", "repeat"]


def damage(data, rng, kind=None):
    """(description, damaged bytes): one random damage of `data` (non-empty)."""
    kind = kind or rng.choice(DAMAGE)
    i, j = sorted(rng.randrange(len(data) + 1) for _ in range(2))
    if kind == "truncate":
        return f"truncate at {i}", data[:i]
    if kind == "flip":
        out = bytearray(data)
        for k in rng.sample(range(len(data)), min(len(data), rng.randint(1, 3))):
            out[k] ^= rng.randrange(1, 256)
        return "flip bytes", bytes(out)
    if kind == "nul":
        return f"NUL at {i}", data[:i] + b"\0" + data[i:]
    if kind == "invalid_utf8":
        bad = rng.choice(INVALID_UTF8)
        return f"{bad!r} at {i}", data[:i] + bad + data[i:]
    if kind == "delete":
        return f"delete [{i}:{j}]", data[:i] + data[j:]
    return f"repeat [{i}:{j}]", data[:j] + data[i:j] + data[j:]


def decoded(data):
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


# ----------------------------------------------------------------------------- the two outcomes

def command(args, stdin=b"", timeout=TIMEOUT):
    """Run a command line of the project; a hang fails the test."""
    try:
        return subprocess.run([sys.executable, *map(str, args)], input=stdin, capture_output=True, env=ENV,
                              cwd=ROOT, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"hang (over {timeout} s): {args}")


def failed_cleanly(returncode, stderr):
    """A non-zero exit whose stderr ends with its one `error: ` line (log lines and warnings may come before)."""
    text = stderr.decode("utf-8", "replace") if isinstance(stderr, bytes) else stderr
    lines = [line for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    return returncode != 0 and "Traceback" not in text and len(errors) == 1 and lines[-1] == errors[0]


def check_outcome(problems, case, returncode, stderr, correct):
    """`correct()` says whether an exit 0 did the right thing; what is wrong goes to `problems`."""
    text = stderr.decode("utf-8", "replace")
    if returncode == 0:
        if "Traceback" in text:
            problems.append(f"{case}: traceback on success\n{text[-2000:]}")
        elif not correct():
            problems.append(f"{case}: exit 0 with a wrong result\n{text[-2000:]}")
    elif not failed_cleanly(returncode, text):
        problems.append(f"{case}: exit {returncode} without one error line\n{text[-3000:]}")


@contextmanager
def deadline(seconds=TIMEOUT):
    """A call in this process that takes longer fails the test (SIGALRM interrupts it)."""
    def hang(signum, frame):
        raise TimeoutError(f"hang (over {seconds} s)")
    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def read_or_data_error(problems, case, read, check):
    """A reader returns a result that passes `check(result)`, or raises exactly DataError; else a problem."""
    try:
        with deadline():
            result = read()
    except DataError:
        return None
    except Exception as e:
        problems.append(f"{case}: {type(e).__name__} instead of DataError: {str(e)[:300]}")
        return None
    try:
        check(result)
    except Exception as e:
        problems.append(f"{case}: loaded, but wrong: {type(e).__name__}: {str(e)[:300]}")
    return result


# ----------------------------------------------------------------------------- tools/fastbpe

ALPHABET = "abcdeèñ中ß"


def corpus(rng, n_lines=40):
    return "".join(" ".join("".join(rng.choices(ALPHABET, k=rng.randint(1, 6))) for _ in range(rng.randint(1, 9)))
                   + "\n" for _ in range(n_lines))


def fastbpe(*args, stdin=b""):
    return command([ROOT / "tools" / "fastbpe", *args], stdin)


@pytest.fixture(scope="module")
def bpe_files(tmp_path_factory):
    """A corpus, 30 codes learned on it, and the vocabulary of the corpus in BPE."""
    root = tmp_path_factory.mktemp("bpe")
    text = root / "text"
    text.write_text(corpus(random.Random(SEED)), encoding="utf-8")
    codes = fastbpe("learnbpe", 30, text)
    assert codes.returncode == 0, codes.stderr
    (root / "codes").write_bytes(codes.stdout)
    assert fastbpe("applybpe", root / "text.bpe", text, root / "codes").returncode == 0
    vocab = fastbpe("getvocab", root / "text.bpe")
    (root / "vocab").write_bytes(vocab.stdout)
    return root


def vocab_oracle(text):
    """getvocab's output: words split on ' ' and '\\n' (a last word with neither after it dropped), by
    decreasing count, ties in byte order."""
    counts = Counter(w for w in text.replace("\n", " ").split(" ")[:-1] if w)
    return "".join(f"{w} {c}\n" for w, c in sorted(counts.items(), key=lambda wc: (-wc[1], wc[0].encode())))


def unbpe(text):
    return text.replace("@@ ", "")


def applied_text_oracle(text):
    """applybpe keeps every space and newline and drops a last word with no separator after it."""
    return text[:max(text.rfind(" "), text.rfind("\n")) + 1]


def codes_are_well_formed(out, n_codes, text):
    lines = out.decode("utf-8").splitlines()
    words = set(text.replace("\n", " ").split(" "))
    for line in lines:
        a, b, count = line.split(" ")
        merged = (a + b).replace("</w>", "")
        if not (count.isdigit() and any(merged in w for w in words)):
            return False
    return len(lines) == n_codes


def fastbpe_case(rng, files, tmp):
    """One random fastbpe call on a damaged input; returns (description, args, stdin, correct)."""
    text, codes, vocab = ((files / name).read_bytes() for name in ("text", "codes", "vocab"))
    tool = rng.choice(["getvocab", "learnbpe", "applybpe", "applybpe_stream"])
    target = rng.choice(["text"] if tool in ("getvocab", "learnbpe") else ["text", "codes", "vocab"])
    what, data = damage({"text": text, "codes": codes, "vocab": vocab}[target], rng)
    damaged = tmp / f"{target}.damaged"
    damaged.write_bytes(data)
    paths = {"text": files / "text", "codes": files / "codes", "vocab": files / "vocab", target: damaged}
    use_vocab = target == "vocab" or rng.random() < 0.5
    described = f"fastbpe {tool}, {target} damaged ({what})"
    source = decoded((paths["text"]).read_bytes())
    if tool == "getvocab":
        out = []
        return described, ["getvocab", paths["text"]], b"", out, lambda: source is not None and \
            out[0].stdout == vocab_oracle(source).encode()
    if tool == "learnbpe":
        out = []
        return described, ["learnbpe", 20, paths["text"]], b"", out, lambda: source is not None and \
            codes_are_well_formed(out[0].stdout, 20, source)
    extra = [paths["vocab"]] if use_vocab else []
    if tool == "applybpe":
        output = tmp / "out"
        if output.exists():
            output.unlink()
        return described, ["applybpe", output, paths["text"], paths["codes"], *extra], b"", [], lambda: \
            source is not None and unbpe(output.read_text(encoding="utf-8")) == applied_text_oracle(source)
    lines = paths["text"].read_bytes().split(b"\n")
    lines = lines[:-1] if lines[-1] == b"" else lines
    out = []

    def correct():
        got = out[0].stdout.decode("utf-8").split("\n")
        want = [" ".join(w for w in line.decode("utf-8").split(" ") if w) for line in lines]
        return got[-1] == "" and [unbpe(line) for line in got[:-1]] == want
    return described, ["applybpe_stream", paths["codes"], *extra], paths["text"].read_bytes(), out, correct


def test_fastbpe_damaged_inputs(bpe_files, tmp_path):
    problems = []
    rng = random.Random(SEED)
    for n in range(40):
        described, args, stdin, out, correct = fastbpe_case(rng, bpe_files, tmp_path)
        proc = fastbpe(*args, stdin=stdin)
        out.append(proc)
        check_outcome(problems, f"case {n}: {described}", proc.returncode, proc.stderr, correct)
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems)


# ----------------------------------------------------------------------------- preprocess.py

WORDS = [f"w{i}" for i in range(30)] + ["é", "中文", "ß"]


def text_oracle(text, word2id):
    """preprocess.py's rule: lines split on '\\n', words on any whitespace, unknown words <unk>, the special
    tokens (</s>, <pad>, ...) dropped."""
    lines = text.split("\n")
    lines = lines[:-1] if lines[-1] == "" else lines
    ids = ([word2id.get(w, UNK_INDEX) for w in line.split()] for line in lines)
    return [[i for i in sentence if i >= N_RESERVED or i == UNK_INDEX] for sentence in ids]


def corpus_invariants(corpus):
    """What any loaded corpus guarantees: ids inside its vocabulary, sentences inside its tokens."""
    tokens = np.asarray(corpus.sentences)
    assert tokens.size == 0 or (tokens.min() >= 0 and tokens.max() < len(corpus.dico))
    positions = np.asarray(corpus.positions)
    assert positions.size == 0 or (positions.min() >= 0 and positions.max() < len(tokens))
    assert all(len(corpus[i]) == corpus.lengths[i] for i in range(len(corpus)))


def sentences_of(corpus):
    return [corpus[i].tolist() for i in range(len(corpus))]


@pytest.fixture(scope="module")
def prep_files(tmp_path_factory):
    """A vocabulary, a text, and its binarized forms (ours and the original's)."""
    root = tmp_path_factory.mktemp("prep")
    rng = random.Random(SEED)
    (root / "vocab").write_text("".join(f"{w} {100 - i}\n" for i, w in enumerate(WORDS)), encoding="utf-8")
    (root / "text").write_text("".join(" ".join(rng.choices(WORDS + ["oov"], k=rng.randint(1, 8))) + "\n"
                                       for _ in range(30)), encoding="utf-8")
    dico = Dictionary.read_vocab(root / "vocab")
    save_original(binarize(root / "text", dico, root / "ours.pth", threads=1), root / "original.pth")
    return root


def preprocess_case(rng, files, tmp, n):
    target = rng.choice(["text", "vocab", "ours.pth", "original.pth"])
    what, data = damage((files / target).read_bytes(), rng)
    damaged = tmp / f"{n}.damaged.{target}"
    damaged.write_bytes(data)
    vocab = damaged if target == "vocab" else files / "vocab"
    text = damaged if target == "text" else files / "text"
    output = damaged if target.endswith(".pth") else tmp / f"{n}.out.pth"
    args = [vocab, text, output, "--threads", str(rng.choice([1, 2]))]
    if rng.random() < 0.3:
        args += ["--format", "original"]

    def correct():
        corpus = load_binarized(output)
        corpus_invariants(corpus)
        if target.endswith(".pth"):  # an existing output is only checked (a changed token id is not seen)
            return corpus.dico == Dictionary.read_vocab(vocab)
        lines = [line.split() for line in (decoded(vocab.read_bytes()) or "").split("\n")]
        words = [corpus.dico[i] for i in range(N_RESERVED, len(corpus.dico))]
        listed = [f[0] for f in lines if len(f) == 2]
        if not (len(set(words)) == len(words) and set(words) <= set(listed)):
            return False
        source = decoded(text.read_bytes())
        return source is not None and sentences_of(corpus) == text_oracle(source, corpus.dico.word2id)
    return f"preprocess.py, {target} damaged ({what}), {' '.join(map(str, args[3:]))}", args, correct


def test_preprocess_damaged_inputs(prep_files, tmp_path):
    problems = []
    rng = random.Random(SEED)
    cases = [preprocess_case(rng, prep_files, tmp_path, n) for n in range(30)]
    results = run_in_one_process(tmp_path, "preprocess.py", [(args, os.devnull) for _, args, _ in cases])
    for n, ((described, _, correct), (code, stderr)) in enumerate(zip(cases, results)):
        check_outcome(problems, f"case {n}: {described}", code, stderr.encode(), correct)
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems)


# ----------------------------------------------------------------------------- readers, in process

def load_damaged(folder, names, n_cases, read, check, never_loads, tmp_path):
    """read on n_cases damaged copies of folder's files: each loads and passes check, or is a DataError;
    a copy for which never_loads(data, original) holds does not load."""
    problems = []
    rng = random.Random(SEED)
    for n in range(n_cases):
        name = rng.choice(names)
        original = (folder / name).read_bytes()
        what, data = damage(original, rng)
        path = tmp_path / f"{n}.pth"
        path.write_bytes(data)
        loaded = read_or_data_error(problems, f"case {n}: {name} {what}", lambda: read(path), check)
        assert not (loaded and never_loads(data, original)), f"case {n}: {name} {what} loaded"
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems)


def test_load_binarized_damaged(prep_files, tmp_path):
    """load_binarized on damaged files of both formats: a truncated file never loads; any other damage loads a
    corpus whose ids and offsets are inside their bounds, or is a DataError."""
    load_damaged(prep_files, ["ours.pth", "original.pth"], 150, load_binarized, corpus_invariants,
                 lambda data, original: len(data) < len(original) and data == original[:len(data)], tmp_path)


def vocab_invariants(path):
    def check(dico):
        dico.check_valid()
        listed = [line.split()[0] for line in path.read_text(encoding="utf-8").split("\n") if line.split()]
        words = [dico[i] for i in range(N_RESERVED, len(dico))]
        assert len(set(words)) == len(words) and set(words) <= set(listed)
    return check


def test_read_vocab_damaged(prep_files, bpe_files, tmp_path):
    problems = []
    rng = random.Random(SEED)
    for n in range(100):
        what, data = damage((prep_files / "vocab").read_bytes(), rng)
        path = tmp_path / f"{n}.vocab"
        path.write_bytes(data)
        read_or_data_error(problems, f"case {n}: vocab {what}", lambda: Dictionary.read_vocab(path),
                           vocab_invariants(path))
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems)


def test_bpe_readers_damaged(bpe_files, tmp_path):
    """The codes and vocabulary readers of tools/fastbpe (xlm.data.bpe) on damaged files."""
    problems = []
    from xlm.data.bpe import BPEApplier
    rng = random.Random(SEED)
    for n in range(100):
        target = rng.choice(["codes", "vocab"])
        what, data = damage((bpe_files / target).read_bytes(), rng)
        path = tmp_path / f"{n}.{target}"
        path.write_bytes(data)
        paths = {"codes": bpe_files / "codes", "vocab": bpe_files / "vocab", target: path}
        read_or_data_error(problems, f"case {n}: {target} {what}", lambda: BPEApplier(paths["codes"], paths["vocab"]),
                           lambda applier: None)
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems)


def wrong_values():
    """Values of the wrong type or size for any field of a file."""
    return [None, "x", "", -1, 0, 100_000, 2**31, 2**63, 10**30, 1.5, float("nan"), True, [], [1, 2], {}, {"a": 1},
            np.zeros(3, dtype=np.float32), torch.zeros(2, 2)]


def test_load_binarized_wrong_values(prep_files, tmp_path):
    """Each field of both formats replaced by a value of the wrong type or size."""
    problems = []
    import struct
    rng = random.Random(SEED)
    ours = (prep_files / "ours.pth").read_bytes()
    (header_offset,) = struct.unpack("<Q", ours[8:16])
    header = json.loads(ours[header_offset:])
    original = load_binarized(prep_files / "original.pth")
    fields = {"dico": original.dico, "positions": np.asarray(original.positions),
              "sentences": np.asarray(original.sentences), "unk_words": original.unk_words}
    n = 0
    for key in [*header, "words[0]", "header_offset"]:
        for value in wrong_values():
            if isinstance(value, (np.ndarray, torch.Tensor)):
                continue
            changed = dict(header)
            if key == "words[0]":
                changed["words"] = [value, *header["words"][1:]]
            elif key != "header_offset":
                changed[key] = value
            data = ours[:header_offset] + json.dumps(changed).encode()
            if key == "header_offset":
                data = data[:8] + struct.pack("<Q", value % 2**64 if isinstance(value, int) else 2**63) + data[16:]
            path = tmp_path / f"{n}.pth"
            n += 1
            path.write_bytes(data)
            read_or_data_error(problems, f"ours, {key} = {value!r}", lambda: load_binarized(path), corpus_invariants)
    for key in [*fields, "dico.id2word", "dico.word2id", "dico.counts"]:
        for value in wrong_values() + [fields["sentences"].astype(np.int64), fields["positions"][:, :1],
                                       fields["positions"] * 1000, -fields["positions"]]:
            changed = dict(fields)
            if key.startswith("dico."):
                dico = Dictionary(dict(original.dico.id2word), dict(original.dico.word2id), dict(original.dico.counts))
                setattr(dico, key[5:], value)
                changed["dico"] = dico
            else:
                changed[key] = value
            path = tmp_path / f"{n}.pth"
            n += 1
            try:
                torch.save(changed, path)
            except Exception:
                continue
            read_or_data_error(problems, f"original, {key} = {value!r}", lambda: load_binarized(path),
                               corpus_invariants)
    assert rng  # the cases above are all of them, in order
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems)


# ----------------------------------------------------------------------------- checkpoints and translate.py

MT_WORDS = [f"v{i}" for i in range(20)]


def tiny_checkpoint(path, dico, translation):
    torch.manual_seed(0)
    kw = dict(n_words=len(dico), emb_dim=8, n_layers=1, n_heads=2, n_langs=2, n_positions=64)
    params = {"emb_dim": 8, "n_layers": 1, "n_heads": 2, "n_langs": 2, "n_words": len(dico), "n_positions": 64,
              "lang2id": {"en": 0, "fr": 1}, "id2lang": {0: "en", 1: "fr"}, "dropout": 0.0,
              "gelu_activation": True}
    if translation:
        models = dict(encoder=TransformerModel(TransformerConfig(**kw)),
                      decoder=TransformerModel(TransformerConfig(**kw, is_decoder=True)))
    else:
        models = dict(model=TransformerModel(TransformerConfig(**kw)))
    save_checkpoint(checkpoint_payload(dico, params, **models), path)


@pytest.fixture(scope="module")
def model_files(tmp_path_factory, prep_files):
    root = tmp_path_factory.mktemp("models")
    (root / "vocab").write_text("".join(f"{w} {100 - i}\n" for i, w in enumerate(MT_WORDS)), encoding="utf-8")
    dico = Dictionary.read_vocab(root / "vocab")
    tiny_checkpoint(root / "mt.pth", dico, translation=True)
    tiny_checkpoint(root / "mlm.pth", dico, translation=False)
    return root


def model_works(model):
    """A loaded model runs: its encoder (and decoder) on a two-sentence batch, output of the right shape."""
    assert len(model.dico) == model.encoder.embeddings.weight.shape[0]
    model.dico.check_valid()
    batch = batch_sentences([np.array([5, 6, 7]), np.array([8])])
    with torch.no_grad():
        enc = model.encoder(batch.x, batch.lengths, langs=0)
        assert enc.shape[:2] == batch.x.shape
        if model.decoder is not None:
            dec = model.decoder(batch.x, batch.lengths, langs=1, causal=True, src_enc=enc, src_len=batch.lengths)
            assert dec.shape[:2] == batch.x.shape


def test_load_model_damaged(model_files, tmp_path):
    """load_model on damaged checkpoint files: a shortened one never loads; any other damage gives a model
    that runs, or a DataError."""
    load_damaged(model_files, ["mt.pth", "mlm.pth"], 60, load_model, model_works,
                 lambda data, original: len(data) < len(original), tmp_path)


def replaced(data, key, value):
    """A copy of a checkpoint dict with one entry (`params.emb_dim`, `model.<weight>`, ...) replaced."""
    data = dict(data)
    if "." in key:
        top, sub = key.split(".", 1)
        data[top] = dict(data[top])
        data[top][sub] = value
    else:
        data[key] = value
    return data


def test_load_model_wrong_values(model_files, tmp_path):
    """Every entry of a checkpoint, and every option of its params, replaced by a value of the wrong type
    or size (a sample of the pairs, the same on every run)."""
    problems = []
    rng = random.Random(SEED)
    checkpoints = {name: torch.load(model_files / name, weights_only=True) for name in ("mt.pth", "mlm.pth")}
    cases = []
    for name, data in checkpoints.items():
        weights = "model" if "model" in data else "encoder"
        keys = [*data, *(f"params.{k}" for k in (*data["params"], "asm", "use_memory", "sinusoidal_embeddings",
                                                  "share_inout_emb", "use_lang_emb", "asm_cutoffs", "layer_norm_eps",
                                                  "pad_index", "eos_index", "attention_dropout")),
                f"{weights}.embeddings.weight", f"{weights}.position_embeddings.weight", "dico_id2word.14",
                "dico_word2id.v0", "dico_counts.v0"]
        cases += [(name, key, value) for key in keys for value in wrong_values()]
    for n, (name, key, value) in enumerate(rng.sample(cases, 300)):
        path = tmp_path / f"{n}.pth"
        torch.save(replaced(checkpoints[name], key, value), path)
        read_or_data_error(problems, f"{name}, {key} = {value!r}", lambda: load_model(path), model_works)
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems)


DRIVER = r'''
"""Run a script as `python SCRIPT ARGS < STDIN` would, once per case, in one process: the imports are paid once."""
import io, json, logging, runpy, signal, sys, traceback

def hang(signum, frame):
    raise TimeoutError("hang")

signal.signal(signal.SIGALRM, hang)
timeout = int(sys.argv[2])
results = []
for case in json.load(open(sys.argv[1])):
    sys.argv = [case["script"], *case["args"]]
    sys.stdin = io.TextIOWrapper(io.BytesIO(open(case["stdin"], "rb").read()), encoding="utf-8")
    sys.stdout = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", write_through=True)
    sys.stderr = err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", write_through=True)
    logging.root.handlers.clear()
    signal.alarm(timeout)
    try:
        runpy.run_path(case["script"], run_name="__main__")
        code = 0
    except SystemExit as e:  # what the interpreter does with it
        code = 0 if e.code is None else e.code if isinstance(e.code, int) else 1
        if not isinstance(e.code, (int, type(None))):
            print(e.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        signal.alarm(0)
    results.append([code, err.buffer.getvalue().decode("utf-8", "replace")])
sys.__stdout__.write(json.dumps(results))
'''


def run_in_one_process(tmp, script, cases):
    """[(returncode, stderr)] of `python SCRIPT ARGS < STDIN` for each (args, stdin_path) case, run by DRIVER
    in one process (translate.py imports torch: 3 s a process)."""
    (tmp / "driver.py").write_text(DRIVER)
    (tmp / "cases.json").write_text(json.dumps([{"script": str(ROOT / script), "args": list(map(str, args)),
                                                 "stdin": str(stdin)} for args, stdin in cases]))
    try:
        proc = subprocess.run([sys.executable, tmp / "driver.py", tmp / "cases.json", str(TIMEOUT)],
                              capture_output=True, env=ENV,
                              cwd=ROOT, timeout=TIMEOUT + 10 * len(cases))
    except subprocess.TimeoutExpired:
        pytest.fail(f"hang: {script}")
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    return json.loads(proc.stdout)


def translate_cases(rng, files, tmp):
    """(description, args, stdin, correct) of random translate.py calls with a damaged input or checkpoint."""
    lines = "".join(" ".join(rng.choices(MT_WORDS, k=rng.randint(1, 6))) + "\n" for _ in range(6)).encode()
    model = files / "mt.pth"
    cases = []
    for n in range(24):
        stdin, checkpoint = tmp / f"{n}.in", model
        stdin.write_bytes(lines)
        target = rng.choice(["stdin", "stdin", "checkpoint"])
        if target == "stdin":
            what, data = damage(lines, rng)
            stdin.write_bytes(data)
        else:
            what, data = damage(model.read_bytes(), rng)
            checkpoint = tmp / f"{n}.pth"
            checkpoint.write_bytes(data)
        output = tmp / f"{n}.out"
        args = ["--model_path", checkpoint, "--src_lang", "en", "--tgt_lang", "fr", "--output_path", output,
                "--beam_size", rng.choice(["1", "2"]), "--batch_size", rng.choice(["1", "4"])]

        def correct(stdin=stdin, output=output):
            n_lines = len(stdin.read_bytes().splitlines())  # one translation per input line, in the vocabulary
            got = output.read_text(encoding="utf-8").split("\n")
            return got[-1] == "" and len(got) - 1 == n_lines and \
                all(w in MT_WORDS or w in SPECIAL_WORDS for line in got for w in line.split())
        cases.append((f"translate.py, {target} damaged ({what})", args, stdin, correct))
    return cases


def test_translate_damaged_inputs(model_files, tmp_path):
    problems = []
    cases = translate_cases(random.Random(SEED), model_files, tmp_path)
    results = run_in_one_process(tmp_path, "translate.py", [(args, stdin) for _, args, stdin, _ in cases])
    for n, ((described, _, _, correct), (code, stderr)) in enumerate(zip(cases, results)):
        check_outcome(problems, f"case {n}: {described}", code, stderr.encode(), correct)
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems)


# ----------------------------------------------------------------------------- files of the wrong kind

def wrong_kind_files(tmp, bpe_files, prep_files, model_files):
    """Files that are not what a flag expects: each name to its path."""
    (tmp / "empty").write_bytes(b"")
    (tmp / "huge_count.vocab").write_text("a 99999999999999999999\nb 1\n")
    (tmp / "nul.vocab").write_bytes(b"a\0b 3\nc 2\n")
    torch.save({"positions": torch.zeros(3, 2), "sentences": list(range(5))}, tmp / "data.pth")
    return {"empty": tmp / "empty", "codes": bpe_files / "codes", "bpe vocab": bpe_files / "vocab",
            "text": prep_files / "text", "binarized": prep_files / "ours.pth", "original binarized":
            prep_files / "original.pth", "checkpoint": model_files / "mt.pth", "data .pth": tmp / "data.pth",
            "huge count vocab": tmp / "huge_count.vocab", "NUL vocab": tmp / "nul.vocab", "folder": tmp}


def test_commands_given_files_of_the_wrong_kind(bpe_files, prep_files, model_files, tmp_path):
    """Every file argument of every command given each file of another kind: fastbpe one process a call
    (it runs the compiled fastBPE), preprocess.py's calls all in one process, translate.py's too."""
    problems = []
    kinds = wrong_kind_files(tmp_path, bpe_files, prep_files, model_files)
    text, codes = bpe_files / "text", bpe_files / "codes"
    output = tmp_path / "out"
    for kind, path in kinds.items():
        text_file = path.is_file() and path.stat().st_size and decoded(path.read_bytes()) is not None
        calls = [(["learnbpe", 10, path], b"", text_file),
                 (["applybpe", output, text, path], b"", kind == "codes"),
                 (["applybpe", output, text, codes, path], b"", kind in ("bpe vocab", "NUL vocab")),
                 (["applybpe_stream", path], text.read_bytes(), kind == "codes")]
        for args, stdin, may_succeed in calls:
            if output.exists():
                output.unlink()
            proc = fastbpe(*args, stdin=stdin)
            check_outcome(problems, f"fastbpe {args[0]} given a {kind} file as {args[-1]}", proc.returncode,
                          proc.stderr, lambda: may_succeed)
    preprocess = []  # (what, args): each file as the vocabulary, then as the text, all in one process
    for kind, path in kinds.items():
        for role, vocab, sentences in (("vocabulary", path, prep_files / "text"),
                                       ("text", prep_files / "vocab", path)):
            preprocess.append((f"a {kind} file as the {role}",
                               [vocab, sentences, tmp_path / f"{len(preprocess)}.pth"]))
    results = run_in_one_process(tmp_path, "preprocess.py", [([*args, "--threads", 1], os.devnull)
                                                             for _, args in preprocess])
    for (what, (_, _, output)), (code, stderr) in zip(preprocess, results):
        check_outcome(problems, f"preprocess.py given {what}", code, stderr.encode(),
                      lambda: output.exists() and corpus_invariants(load_binarized(output)) is None)
    stdin = tmp_path / "in"
    stdin.write_text(" ".join(MT_WORDS[:5]) + "\n")
    cases = [(["--model_path", path, "--src_lang", "en", "--tgt_lang", "fr", "--output_path", tmp_path / f"{i}.out"],
              path if kind != "folder" else stdin) for i, (kind, path) in enumerate(kinds.items())]
    cases.append((["--model_path", kinds["checkpoint"], "--src_lang", "en", "--tgt_lang", "fr", "--output_path",
                   tmp_path / "missing" / "out"], stdin))
    for (kind, _), (code, stderr) in zip([*kinds.items(), ("missing output folder", None)],
                                         run_in_one_process(tmp_path, "translate.py", cases)):
        check_outcome(problems, f"translate.py given a {kind} file as --model_path and stdin", code, stderr.encode(),
                      lambda: kind == "checkpoint")
    assert not problems, f"{len(problems)} problems:\n" + "\n".join(problems)


# ----------------------------------------------------------------------------- what the fuzzing found, kept

CHECKPOINT_REGRESSIONS = [  # each raised another exception than DataError, or loaded and failed in the model
    ("mt.pth", "params.pad_index", torch.zeros(2, 2)), ("mt.pth", "params.pad_index", float("nan")),
    ("mt.pth", "params.pad_index", True), ("mlm.pth", "params.pad_index", 10**30),
    ("mlm.pth", "params.n_heads", torch.zeros(2, 2)), ("mlm.pth", "params.sinusoidal_embeddings", torch.zeros(2, 2)),
    ("mlm.pth", "params.dropout", -1), ("mt.pth", "params.dropout", "x"), ("mlm.pth", "params.dropout", float("nan")),
    ("mt.pth", "params.layer_norm_eps", None), ("mlm.pth", "params.layer_norm_eps", []),
    ("mt.pth", "params", np.zeros(3, dtype=np.float32)), ("mlm.pth", "params.n_words", np.zeros(3, dtype=np.float32)),
    ("mlm.pth", "dico_word2id.v0", torch.zeros(2, 2)),
    # sizes that build a huge model before the weights are compared with it
    ("mlm.pth", "params.n_layers", 100_000), ("mlm.pth", "params.emb_dim", 100_000),
    ("mlm.pth", "params.n_langs", 2**31), ("mt.pth", "params.n_positions", 2**31),
]


@pytest.mark.parametrize("name, key, value", CHECKPOINT_REGRESSIONS, ids=lambda v: str(v)[:20])
def test_checkpoint_with_a_wrong_value_is_a_data_error(model_files, tmp_path, name, key, value):
    path = tmp_path / "bad.pth"
    torch.save(replaced(torch.load(model_files / name, weights_only=True), key, value), path)
    with deadline(10), pytest.raises(DataError, match="bad.pth"):
        load_model(path)


def test_binarized_header_with_a_negative_token_count_is_a_data_error(prep_files, tmp_path):
    import struct
    data = (prep_files / "ours.pth").read_bytes()
    (offset,) = struct.unpack("<Q", data[8:16])
    header = json.loads(data[offset:])
    (tmp_path / "bad.pth").write_bytes(data[:offset] + json.dumps({**header, "n_tokens": -1}).encode())
    with pytest.raises(DataError, match="bad.pth: corrupt header"):
        load_binarized(tmp_path / "bad.pth")


def test_a_truncated_binarized_file_is_named_as_one(prep_files, tmp_path):
    import struct
    data = (prep_files / "ours.pth").read_bytes()
    (offset,) = struct.unpack("<Q", data[8:16])
    for size, message in [(offset - 1, f"truncated ({offset - 1} bytes; its header starts at byte {offset})"),
                          (offset + 5, "corrupt header, or a truncated file")]:
        (tmp_path / "cut.pth").write_bytes(data[:size])
        with pytest.raises(DataError, match=re.escape(f"cut.pth: {message}")):
            load_binarized(tmp_path / "cut.pth")


def test_fastbpe_refuses_a_vocabulary_given_as_codes(bpe_files, tmp_path):
    """It was read as subword-nmt codes that merge nothing: the text came out split into characters."""
    proc = fastbpe("applybpe", tmp_path / "out", bpe_files / "text", bpe_files / "vocab")
    assert failed_cleanly(proc.returncode, proc.stderr) and b"a vocabulary, not BPE codes" in proc.stderr
    assert not (tmp_path / "out").exists()
