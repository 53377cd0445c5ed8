"""tools/*.py given what a careless user types: one line naming the file or flag, a non-zero exit status,
no traceback, and no output lost (outputs in a missing folder, --help, counts below 1, a translation
model where a masked LM is needed)."""
import json
import os
import re
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, load_script, python, run
from test_compare_logs import XLM_LOG
from test_hardening_cli import mt_checkpoint, one_error_line  # noqa: F401  (the random MT model)
from xlm.data.binarized import binarize
from xlm.data.dictionary import SPECIAL_WORDS, Dictionary
from xlm.fileio import DataError, atomic_write, check_output_folder
from xlm.model.checkpoint import checkpoint_payload, save_checkpoint
from xlm.model.transformer import TransformerConfig, TransformerModel

TOOLS = ROOT / "tools"
WORDS = ["the", "cat", "is", "here"]
fill_mask_main = load_script(TOOLS / "fill_mask.py", "fill_mask_tool").main  # errors checked in process


def tool(name, *args, **kw):
    return python(TOOLS / name, *args, check=False, **kw)


def tool_redirected(redirect, name, *args):
    """A tool run with a shell's redirection of its standard streams: `< FILE` (bytes), `>&-`, `<&-`."""
    return run(["sh", "-c", f'"$@" {redirect}', "sh", sys.executable, TOOLS / name, *args], check=False)


@pytest.fixture(scope="module")
def mlm_checkpoint(tmp_path_factory):
    """A random (untrained) encoder of an MLM run of two languages (TLM input can be made), with the run's params."""
    vocab = SPECIAL_WORDS + WORDS
    torch.manual_seed(0)
    model = TransformerModel(TransformerConfig(n_words=len(vocab), emb_dim=16, n_layers=1, n_heads=2, n_langs=2))
    params = dict(emb_dim=16, n_layers=1, n_heads=2, n_langs=2, lang2id={"en": 0, "fr": 1}, id2lang={0: "en", 1: "fr"},
                  encoder_only=True, n_words=len(vocab), mlm_steps=[("en", None), ("fr", None)])
    path = tmp_path_factory.mktemp("mlm") / "mlm.pth"
    save_checkpoint(checkpoint_payload(Dictionary.from_words([(w, 0) for w in vocab]), params, model=model.eval()),
                    path)
    return path


# ----------------------------------------------------------------------------- outputs in a missing folder

def test_atomic_write_in_a_missing_folder_names_the_output(tmp_path):
    out = tmp_path / "missing" / "x.pth"
    with pytest.raises(DataError, match=f"{out}: cannot write in {tmp_path / 'missing'}"):
        with atomic_write(out) as f:
            f.write(b"x")
    assert list(tmp_path.iterdir()) == []


def test_convert_binarized_to_a_missing_folder(tmp_path):
    (tmp_path / "vocab").write_text("".join(f"{w} 1\n" for w in WORDS))
    (tmp_path / "train.en").write_text("the cat is here\n")
    binarize(tmp_path / "train.en", Dictionary.read_vocab(tmp_path / "vocab"), tmp_path / "train.en.pth", 1)
    out = tmp_path / "missing" / "x.pth"
    proc = tool("convert_binarized.py", tmp_path / "train.en.pth", out, "--to", "xlm")
    one_error_line(proc, f"error: {out}: cannot write in {tmp_path / 'missing'}")


@pytest.fixture
def run_folder(tmp_path):
    """A run's folder with a two-line train.jsonl and a train.log."""
    run = tmp_path / "run"
    run.mkdir()
    events = [{"kind": "train", "n_iter": 5, "MLM-en": 5.0}, {"kind": "eval", "epoch": 0, "valid_en_mlm_ppl": 300.0}]
    (run / "train.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    (run / "train.log").write_text(XLM_LOG)
    return run


def test_plot_log_output_checked_and_written_whole(run_folder):
    out = run_folder / "missing" / "x.png"
    one_error_line(tool("plot_log.py", run_folder, out), f"error: {out}: cannot write in {run_folder / 'missing'}")
    one_error_line(tool("plot_log.py", run_folder, run_folder / "x.nope"), "x.nope: not an image file name")
    one_error_line(tool("plot_log.py", run_folder, run_folder), f"error: {run_folder}: is a folder")
    (run_folder / "curves.png").write_bytes(b"the previous image")
    proc = tool("plot_log.py", run_folder)
    assert proc.returncode == 0 and proc.stdout.strip() == str(run_folder / "curves.png"), proc.stderr
    assert (run_folder / "curves.png").read_bytes().startswith(b"\x89PNG")
    assert sorted(p.name for p in run_folder.iterdir()) == ["curves.png", "train.jsonl", "train.log"]


def test_seed_table_and_embedding_alignment_check_their_output_first(tmp_path, mlm_checkpoint):
    out = tmp_path / "missing" / "x.json"
    one_error_line(tool("seed_table.py", "a=" + str(tmp_path / "{seed}.log"), "--columns", "x", "--json", out),
                   f"{out}: cannot write in {tmp_path / 'missing'}")
    (tmp_path / "lexicon").write_text("cat here\n")
    one_error_line(tool("embedding_alignment.py", mlm_checkpoint, tmp_path / "lexicon", "--output", out),
                   f"{out}: cannot write in {tmp_path / 'missing'}")


def test_output_folders_under_a_file(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(DataError, match="is not a folder"):
        check_output_folder(tmp_path / "file" / "a" / "b")
    check_output_folder(tmp_path / "new" / "a")
    assert not (tmp_path / "new").exists()
    one_error_line(tool("toy_languages.py", "--out", tmp_path / "file" / "toy"),
                   f"--out {tmp_path / 'file' / 'toy'}: {tmp_path / 'file'} is not a folder")
    one_error_line(tool("extract_gettext.py", tmp_path, "--out", tmp_path / "file" / "sample"),
                   f"--out {tmp_path / 'file' / 'sample'}: {tmp_path / 'file'} is not a folder")


# ----------------------------------------------------------------------------- --help

@pytest.mark.parametrize("script, shown", [("plot_log.py", "DUMP_DIR"), ("corpus_summary.py", "FOLDER"),
                                           ("lowercase_and_remove_accent.py", "stdin to stdout"),
                                           ("fastbpe", "fastbpe learnbpe N FILE"),
                                           ("input_from_sgm.py", "input-from-sgm.perl")])
def test_help(script, shown):
    proc = tool(script, "--help", input="")
    assert proc.returncode == 0 and shown in proc.stdout and proc.stderr == "", proc.stdout + proc.stderr


def test_corpus_summary_missing_folder(tmp_path):
    one_error_line(tool("corpus_summary.py", tmp_path / "nope"), f"error: {tmp_path / 'nope'}: no such folder")


def test_corpus_summary_goes_on_past_a_corpus_it_cannot_read(tmp_path):
    dico = Dictionary.from_words([(w, 0) for w in SPECIAL_WORDS] + [("cat", 3)])
    text = tmp_path / "text"
    text.write_text("cat cat\ncat\n")
    for name in ("a.en.pth", "c.en.pth"):
        binarize(text, dico, str(tmp_path / name))
    (tmp_path / "b.en.pth").write_bytes((tmp_path / "a.en.pth").read_bytes()[:40])
    proc = tool("corpus_summary.py", tmp_path)
    assert proc.returncode == 1 and [line.split()[0] for line in proc.stdout.splitlines()] == \
        ["corpus", "a.en.pth", "c.en.pth"]
    one_error_line(proc, f"error: {tmp_path / 'b.en.pth'}: ")
    assert len(proc.stderr.splitlines()) == 1


# ----------------------------------------------------------------------------- counts below 1

def test_fill_mask_top_k(mlm_checkpoint, capsys):
    """--top_k below 1 through the command (one error line, nothing printed); 0 and one beyond the
    vocabulary through `main` in this process (a start of the tool costs seconds)."""
    proc = tool("fill_mask.py", mlm_checkpoint, "the cat is here", "--lang", "en", "--mask", "1", "--top_k", "-3")
    one_error_line(proc, "error: --top_k must be >= 1, got -3")
    assert proc.stdout == ""
    args = [str(mlm_checkpoint), "the cat is here", "--lang", "en", "--mask", "1", "--top_k"]
    with pytest.raises(DataError, match="^--top_k must be >= 1, got 0$"):
        fill_mask_main([*args, "0"])
    fill_mask_main([*args, "1000"])
    assert len(capsys.readouterr().out.split("|")[1].split()) == 2 * len(SPECIAL_WORDS + WORDS)  # every word, its p


@pytest.mark.parametrize("backend", ["python", "compiled"])
@pytest.mark.parametrize("n", ["0", "-3", "abc"])
def test_fastbpe_learnbpe_needs_a_positive_n(tmp_path, monkeypatch, backend, n):
    if backend == "compiled" and not os.access(TOOLS / "fastBPE" / "fast", os.X_OK):
        pytest.skip("fastBPE is not built (tools/install_fastbpe.sh)")
    (tmp_path / "text").write_text("the cat is here\n" * 3)
    monkeypatch.setenv("FASTBPE", "" if backend == "python" else str(TOOLS / "fastBPE" / "fast"))
    proc = tool("fastbpe", "learnbpe", n, tmp_path / "text")
    one_error_line(proc, f"error: learnbpe N: the number of merges must be a whole number >= 1, got '{n}'")
    assert proc.stdout == ""


def test_other_counts_below_their_least(tmp_path):
    one_error_line(tool("seed_table.py", "a=x", "--columns", "x", "--digits", "-1"), "--digits -1: need at least 0")
    one_error_line(tool("toy_languages.py", "--out", tmp_path / "toy", "--vocab_size", "0"),
                   "--vocab_size must be at least 40")
    one_error_line(tool("toy_languages.py", "--out", tmp_path / "toy", "--n_domains", "0"),
                   "--n_domains must be at least 1")
    one_error_line(tool("extract_gettext.py", tmp_path, "--max-train", "0"), "--max-train 0: must be >= 1")
    assert not (tmp_path / "toy").exists()


# ----------------------------------------------------------------------------- what the model was trained for

def test_fill_mask_and_unigram_ppl_refuse_a_translation_model(mt_checkpoint):  # noqa: F811
    one_error_line(tool("unigram_ppl.py", mt_checkpoint),
                   f"error: {mt_checkpoint}: the run has no MLM/TLM steps (--mlm_steps)")
    with pytest.raises(DataError) as raised:
        fill_mask_main([str(mt_checkpoint), "a b c", "--lang", "en", "--mask", "1"])
    assert str(raised.value) == f"{mt_checkpoint}: the run has no MLM/TLM steps (--mlm_steps)"


def test_fill_mask_refuses_a_run_without_mlm_steps(tmp_path, mlm_checkpoint, capsys):
    """A run's params that list no MLM/TLM step (an MT or CLM run) say its output layer never learned to
    fill masks, encoder-decoder or not; params that do not say (a converted model) are taken as they are."""
    from xlm.model.checkpoint import read_checkpoint
    data = read_checkpoint(mlm_checkpoint)
    for steps, refused in [([], True), (None, False)]:
        params = {k: v for k, v in data["params"].items() if k != "mlm_steps"}
        if steps is not None:
            params["mlm_steps"] = steps
        save_checkpoint({**data, "params": params}, tmp_path / "m.pth")
        args = [str(tmp_path / "m.pth"), "the cat is here", "--lang", "en", "--mask", "1"]
        if refused:
            with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'm.pth'}: the run has no MLM/TLM steps")):
                fill_mask_main(args)
        else:
            fill_mask_main(args)
            assert "[cat]" in capsys.readouterr().out


# ----------------------------------------------------------------------------- compare_logs.py

def test_compare_logs_unknown_metric_and_a_folder(run_folder):
    log = run_folder / "train.log"
    one_error_line(tool("compare_logs.py", log, "--metrics", "nonexistent_metric"),
                   "error: --metrics nonexistent_metric: no metric of the logs contains it (they have: ")
    proc = tool("compare_logs.py", log, "--metrics", "nonexistent_metric")
    assert "valid_mlm_ppl" in proc.stderr and proc.stdout == ""
    one_error_line(tool("compare_logs.py", run_folder),
                   f"error: {run_folder}: is a folder, expected a train.log file (the run's is {log})")
    proc = tool("compare_logs.py", log, "--metrics", "valid")
    assert proc.returncode == 0 and "valid_mlm_ppl" in proc.stdout, proc.stderr


# ----------------------------------------------------------------------------- fill_mask.py's input lines

def test_fill_mask_names_the_line_of_a_sentence_it_cannot_take(tmp_path, mlm_checkpoint, monkeypatch, capsys):
    """A line longer than the model's positions (alone or as a translation), invalid UTF-8, and a line
    without a word to mask are one error naming the line of standard input (and of --translations): the
    first through the command, the others in this process (a start of the tool costs seconds)."""
    (tmp_path / "long").write_text("the cat\n" + "the " * 600 + "\n")
    proc = tool_redirected(f"< {tmp_path / 'long'}", "fill_mask.py", mlm_checkpoint, "--lang", "en", "--mask", "0")
    one_error_line(proc, "error: <stdin>:2: the sentence has 600 subwords, more than the 510 that the model's 512 "
                         "positions hold with the two </s>")

    def error(stdin, *args):
        (tmp_path / "stdin").write_bytes(stdin)
        with open(tmp_path / "stdin", encoding="utf-8") as f:
            monkeypatch.setattr(sys, "stdin", f)
            with pytest.raises(DataError) as raised:
                fill_mask_main([str(mlm_checkpoint), "--lang", "en", *map(str, args)])
        return str(raised.value), capsys.readouterr().out

    message, _ = error(b"cat\ncat\n", "--mask", "0", "--translations", tmp_path / "long", "--translation_lang", "fr")
    assert message.startswith(f"<stdin>:2, {tmp_path / 'long'}:2: the translation has 600 subwords")
    # standard input is read whole before anything is printed
    assert error(b"the cat\nthe \xff cat\n", "--mask", "0") == \
        ("<stdin>:2: invalid UTF-8 (invalid start byte at byte 5 of the line)", "")
    message, _ = error(b"the cat\n\n. ,\n", "--mask", "random")
    assert message == "<stdin>:3: --mask random: no word to mask in '. ,'"


# ----------------------------------------------------------------------------- embedding_alignment.py

def test_embedding_alignment_bad_lexicon_and_candidates(tmp_path, mlm_checkpoint):
    """Bad UTF-8 in the lexicon through the command (one error line); the other files' errors through `main`
    in this process (a start of the tool costs seconds)."""
    (tmp_path / "lexicon").write_text("cat here\n")
    (tmp_path / "binary").write_bytes(b"cat here\n\xff\xfe bad\n")
    one_error_line(tool("embedding_alignment.py", mlm_checkpoint, tmp_path / "binary"),
                   f"error: {tmp_path / 'binary'}:2: invalid UTF-8")
    embedding_alignment = load_script(TOOLS / "embedding_alignment.py", "embedding_alignment_tool").main

    def error(*args):
        with pytest.raises(DataError) as raised:
            embedding_alignment([str(mlm_checkpoint), *map(str, args)])
        return str(raised.value)

    assert error(tmp_path / "lexicon", "--candidates", tmp_path / "binary").startswith(
        f"{tmp_path / 'binary'}:2: invalid UTF-8")
    (tmp_path / "unknown").write_text("zebra\nunicorn\n")
    assert error(tmp_path / "lexicon", "--candidates", tmp_path / "unknown") == \
        f"{tmp_path / 'unknown'}: none of its 2 words is in the vocabulary (give --codes to split them into subwords)"
    (tmp_path / "bad").write_text("cat here now\n")
    assert error(tmp_path / "bad") == f"{tmp_path / 'bad'}:1: expected 'src_word tgt_word', found 3 fields"


def test_compare_logs_and_plot_log_on_a_binary_or_special_file(run_folder):
    binary = b"INFO - 12/02/26 10:00:00 - 0:00:00 - \xff\xfe\n"
    (run_folder / "train.log").write_bytes(binary)
    one_error_line(tool("compare_logs.py", run_folder / "train.log"),
                   f"error: {run_folder / 'train.log'}:1: invalid UTF-8 (invalid start byte at byte 38 of the line)")
    one_error_line(tool("compare_logs.py", os.devnull), f"error: {os.devnull}: not a regular file")
    (run_folder / "train.jsonl").write_bytes(b'{"kind": "train"}\n' + binary)
    one_error_line(tool("plot_log.py", run_folder), f"error: {run_folder / 'train.jsonl'}:2: invalid UTF-8")


# ----------------------------------------------------------------------------- closed standard streams

@pytest.mark.parametrize("script, args", [
    ("lowercase_and_remove_accent.py", []), ("bleu.py", ["hyp", "ref"]), ("compare_logs.py", ["train.log"]),
    ("plot_log.py", ["dump"]), ("unigram_ppl.py", ["m.pth"]), ("fill_mask.py", ["m.pth", "--lang", "en", "a"]),
    ("embedding_alignment.py", ["m.pth", "lexicon"]), ("input_from_sgm.py", [])])
def test_closed_stdout_is_one_error_line(script, args):
    """`>&-` leaves sys.stdout None: print() would drop every line and exit 0, a write would raise."""
    proc = tool_redirected("< /dev/null >&-", script, *args)
    one_error_line(proc, "error: standard output is closed")


@pytest.mark.parametrize("script, args", [("lowercase_and_remove_accent.py", []), ("input_from_sgm.py", []),
                                          ("fill_mask.py", ["m.pth", "--lang", "en"])])
def test_closed_stdin_is_one_error_line(script, args):
    one_error_line(tool_redirected("<&-", script, *args), "error: standard input is closed")


# ----------------------------------------------------------------------------- input_from_sgm.py

def test_input_from_sgm_unclosed_seg_is_linear_and_named():
    """A <seg> the file never closes takes every later line (input-from-sgm.perl's rule): joined in linear
    time (a search of the whole joined line at each line took minutes for 20,000 lines), no line for it, as
    the Perl script, and a warning naming the line that opened it."""
    sgm = b'<doc>\n<seg id="1">a</seg>\n<seg id="2">never closed\n' + b"more text\n" * 20000
    proc = subprocess.run([sys.executable, TOOLS / "input_from_sgm.py"], input=sgm, capture_output=True, timeout=30)
    assert proc.returncode == 0 and proc.stdout == b"a\n", proc.stderr
    assert proc.stderr.decode().splitlines() == ["warning: <stdin>:3: a <seg> that the input never closes: no line "
                                                 "for it, as input-from-sgm.perl"]
