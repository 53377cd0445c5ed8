"""translate.py as a user runs it, with a translation checkpoint of a model trained to reverse."""
import io
import json
import os
import re
import resource
import signal
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, load_script, python, train_reverser
from xlm.data.dictionary import SPECIAL_WORDS, Dictionary
from xlm.fileio import DataError
from xlm.model.checkpoint import checkpoint_payload, save_checkpoint

WORDS = ["a", "b", "c", "d", "e", "f", "g", "h"]
VOCAB = SPECIAL_WORDS + WORDS
translate_script = load_script(ROOT / "translate.py", "translate_script")  # its functions, called in process


def save_translation_model(enc, dec, path):
    """An en->fr translation checkpoint of enc and dec, trained on SPECIAL_WORDS + WORDS."""
    params = dict(emb_dim=32, n_layers=2, n_heads=4, n_langs=2, lang2id={"en": 0, "fr": 1}, id2lang={0: "en", 1: "fr"},
                  encoder_only=False, n_words=len(VOCAB))
    save_checkpoint(checkpoint_payload(Dictionary.from_words([(w, 0) for w in VOCAB]), params, encoder=enc,
                                       decoder=dec), path)
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    enc, dec = train_reverser(len(VOCAB), steps=200, first_word=len(SPECIAL_WORDS))
    return save_translation_model(enc, dec, tmp_path_factory.mktemp("mt") / "mt.pth")


LINES = ["a b c", "h", "d e f g h", "b b a", "c d", "g f e d c b", "a"]


def test_translate_keeps_the_order_and_translates(checkpoint, tmp_path):
    out = tmp_path / "out.fr"
    python("translate.py", "--model_path", checkpoint, "--src_lang", "en", "--tgt_lang", "fr",
           "--output_path", out, "--batch_size", "3", input="\n".join(LINES) + "\n")
    got = out.read_text().splitlines()
    assert len(got) == len(LINES)
    assert sum(g.split() == line.split()[::-1] for g, line in zip(got, LINES)) >= 5
    # one sentence at a time gives the same lines (none of them runs to max_len)
    one = tmp_path / "one.fr"
    python("translate.py", "--model_path", checkpoint, "--src_lang", "en", "--tgt_lang", "fr",
           "--output_path", one, "--batch_size", "1", input="\n".join(LINES) + "\n")
    assert one.read_text().splitlines() == got
    beam = tmp_path / "beam.fr"
    python("translate.py", "--model_path", checkpoint, "--src_lang", "en", "--tgt_lang", "fr",
           "--output_path", beam, "--beam_size", "4", "--length_penalty", "1.0", input="\n".join(LINES) + "\n")
    assert len(beam.read_text().splitlines()) == len(LINES)


def test_an_output_that_is_not_a_file_is_written_to(checkpoint, tmp_path):
    """As the original (whose check is for files only): --output_path /dev/stdout, or a named pipe, gets
    the translations straight, the file's lines, and no .partial file beside it."""
    args = ["--model_path", checkpoint, "--src_lang", "en", "--tgt_lang", "fr", "--batch_size", "3"]
    python("translate.py", *args, "--output_path", tmp_path / "out.fr", input="\n".join(LINES) + "\n")
    proc = python("translate.py", *args, "--output_path", "/dev/stdout", input="\n".join(LINES) + "\n")
    assert proc.stdout == (tmp_path / "out.fr").read_text()
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    reader = subprocess.Popen(["cat", str(pipe)], stdout=subprocess.PIPE, text=True)
    python("translate.py", *args, "--output_path", pipe, input="\n".join(LINES) + "\n")
    assert reader.communicate(timeout=60)[0] == (tmp_path / "out.fr").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.fr", "pipe"]


def test_empty_input_gives_an_empty_output(checkpoint, tmp_path, monkeypatch, capsys):
    """As the original: an empty shard of a split corpus is translated into an empty file, with a warning."""
    out = tmp_path / "out.fr"
    translate_in_process(monkeypatch, ["--model_path", checkpoint, "--src_lang", "en", "--tgt_lang", "fr",
                                       "--output_path", out], "")
    assert out.read_text() == "" and "warning: <stdin>: no input; the output is empty" in capsys.readouterr().err


def test_input_of_unknown_words_is_warned_of(checkpoint, tmp_path, monkeypatch, capsys):
    """Text that is not tokenized and BPE'd as the model's is mostly unknown words: translated, with a
    warning saying how many (input of the model's words has none)."""
    args = ["--model_path", checkpoint, "--src_lang", "en", "--tgt_lang", "fr", "--output_path"]
    translate_in_process(monkeypatch, [*args, tmp_path / "raw.fr"], "Hello, a b world!\nc d\n")
    assert "warning: <stdin>: 2 of 6 words (33.3%) are not in the model's vocabulary: is the input tokenized " \
           "and BPE'd with the model's codes?" in capsys.readouterr().err
    assert len((tmp_path / "raw.fr").read_text().splitlines()) == 2
    translate_in_process(monkeypatch, [*args, tmp_path / "ok.fr"], "\n".join(LINES) + "\n")
    assert "vocabulary" not in capsys.readouterr().err


def test_exp_name_keeps_a_log(checkpoint, tmp_path):
    out = tmp_path / "out.fr"
    python("translate.py", "--model_path", checkpoint, "--src_lang", "en", "--tgt_lang", "fr", "--output_path", out,
           "--exp_name", "tr", "--dump_path", tmp_path / "dumped", input="\n".join(LINES) + "\n")
    log = (tmp_path / "dumped" / "tr" / "translate" / "translate.log").read_text()
    assert '"src_lang": "en"' in log.splitlines()[0] and "Read 7 sentences from stdin: en to fr" in log
    assert f"Translated 7 sentences to {out}" in log.splitlines()[-1]


def test_batches_follow_the_input_order_as_the_original(tmp_path):
    """A decoder that never ends a sentence: every translation runs to the max_len of its batch, 1.5 x
    its longest source + 10 (</s> included). The original's batches are --batch_size lines in input order;
    batches sorted by length would give "h" a shorter limit."""
    enc, dec = train_reverser(len(VOCAB), steps=1, first_word=len(SPECIAL_WORDS))
    with torch.no_grad():
        dec.pred_layer.proj.bias[dec.config.eos_index] = -1e9
    model = save_translation_model(enc, dec, tmp_path / "mt.pth")
    for beam_size in (1, 3):
        out = tmp_path / f"out{beam_size}.fr"
        python("translate.py", "--model_path", model, "--src_lang", "en", "--tgt_lang", "fr",
               "--output_path", out, "--batch_size", "3", "--beam_size", beam_size, input="\n".join(LINES) + "\n")
        longest = [max(len(line.split()) + 2 for line in LINES[i - i % 3:i - i % 3 + 3]) for i in range(len(LINES))]
        assert [len(line.split()) for line in out.read_text().splitlines()] == [int(1.5 * n + 10) - 2 for n in longest]
    # 1.5 x 342 + 10 = 523 would pass the model's 512 positions (the original, reading position 512, stops
    # there): cut at 513 tokens, the last, </s>, at position 512 (an output, never an input), 511 words
    out = tmp_path / "long.fr"
    python("translate.py", "--model_path", model, "--src_lang", "en", "--tgt_lang", "fr",
           "--output_path", out, input="a b\n" + " ".join(["a"] * 340) + "\n")
    assert [len(line.split()) for line in out.read_text().splitlines()] == [511, 511]


def test_bad_input_lines_are_named(checkpoint, tmp_path, monkeypatch):
    """An empty line through the command (an error, no output written), a line too long in this process."""
    args = ["--model_path", checkpoint, "--src_lang", "en", "--tgt_lang", "fr", "--output_path", tmp_path / "out"]
    proc = python("translate.py", *args, input="a b\n\nc\n", check=False)
    assert proc.returncode == 1 and proc.stderr == "error: <stdin>:2: empty line (every line must hold a sentence)\n"
    with pytest.raises(DataError, match="^<stdin>:2: 600 tokens, more than the 510"):
        translate_in_process(monkeypatch, args, "a b\n" + " ".join(["a"] * 600) + "\n")
    assert not (tmp_path / "out").exists()


def translate_in_process(monkeypatch, argv, text):
    """translate.py's main in this process (a subprocess costs seconds), `text` on its standard input; the
    signal handlers it installs, which would be pytest's, left out."""
    monkeypatch.setattr(translate_script, "exit_on_signals", lambda: None)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(text.encode())))
    translate_script.main([str(a) for a in argv])


def test_bad_flags(checkpoint, tmp_path, capsys):
    """One error line from the command (a language the checkpoint lacks: found after loading it); the
    flags' own checks in this process (a subprocess each would cost seconds)."""
    proc = python("translate.py", "--model_path", checkpoint, "--src_lang", "en", "--tgt_lang", "de",
                  "--output_path", tmp_path / "o", input="a\n", check=False)
    assert proc.returncode == 1 and proc.stderr == "error: language 'de' is not one of the model's: en, fr\n"
    assert not (tmp_path / "o").exists()
    parse_args = translate_script.parse_args
    (tmp_path / "exists").write_text("x")
    for flags, message in [(["--src_lang", "en", "--tgt_lang", "en"], "must differ"),
                           (["--src_lang", "en", "--tgt_lang", "fr", "--output_path", tmp_path / "exists"],
                            "already exists"),
                           (["--src_lang", "en", "--tgt_lang", "fr", "--output_path", f"{tmp_path / 'nope'}/"],
                            "nope/: is a folder, expected an output file name")]:
        if "--output_path" not in flags:
            flags = flags + ["--output_path", tmp_path / "o"]
        with pytest.raises(DataError, match=re.escape(message)):
            parse_args([str(a) for a in ["--model_path", checkpoint, *flags]])
    with pytest.raises(SystemExit):
        parse_args(["--model_path", str(checkpoint), "--src_lang", "en", "--tgt_lang", "fr", "--length_penalty", "nan"])
    assert "argument --length_penalty: expected a finite number, got 'nan'" in capsys.readouterr().err


STOPPED_AT_BATCH = """
import os, signal, sys
sys.path.insert(0, {root!r})
import translate
batch, calls = translate.translate_batch, []

def stopped(*args, **kwargs):  # SIGTERM before the third batch
    calls.append(1)
    if len(calls) == 3:
        os.kill(os.getpid(), signal.SIGTERM)
    return batch(*args, **kwargs)

translate.translate_batch = stopped
translate.main({args!r})
"""


def test_a_stopped_translation_goes_on_where_it_stopped(checkpoint, tmp_path, monkeypatch):
    """SIGTERM in the third batch of 2 lines: 4 lines kept in OUTPUT.partial, no OUTPUT; the rerun goes on
    after them (a line written after the last record, as by a kill, is written again) and gives the
    uninterrupted output. Another input or other flags are refused, naming the partial file."""
    flags = ["--model_path", checkpoint, "--src_lang", "en", "--tgt_lang", "fr", "--batch_size", "2", "--beam_size", 3]
    text = "\n".join(LINES) + "\n"
    python("translate.py", *flags, "--output_path", tmp_path / "whole.fr", input=text)
    out = tmp_path / "parts.fr"
    args = [str(f) for f in [*flags, "--output_path", out]]
    proc = python("-c", STOPPED_AT_BATCH.format(root=str(ROOT), args=args), input=text, check=False)
    assert proc.returncode == 128 + signal.SIGTERM, proc.stderr
    assert "4 translated lines kept in" in proc.stderr and not out.exists()
    partial = tmp_path / "parts.fr.partial"
    assert partial.read_text().splitlines() == (tmp_path / "whole.fr").read_text().splitlines()[:4]
    with open(partial, "a") as f:
        f.write("a line of the batch a kill interrupted\n")

    for other, other_text, what in [(["--beam_size", "2"], text, "--beam_size"),
                                    (["--batch_size", "3"], text, "--batch_size"),
                                    ([], text.replace("a b c", "a b"), "input")]:
        with pytest.raises(DataError, match=re.escape(f"{partial}: the partial output of another command (it had "
                                                      f"another {what})")):
            translate_in_process(monkeypatch, [*flags, *other, "--output_path", out], other_text)

    proc = python("translate.py", *flags, "--output_path", out, input=text)
    assert f"Going on after line 4 of {partial}" in proc.stderr
    assert out.read_text() == (tmp_path / "whole.fr").read_text()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("parts")) == ["parts.fr"]


def test_progress_lines_where_stderr_is_no_terminal(checkpoint, tmp_path):
    """A batch job's log gets a line with the rate and the time left every PROGRESS_EVERY seconds (here
    after every batch); tqdm's bar is only drawn on a terminal (xlm/progress.py)."""
    args = ["--model_path", str(checkpoint), "--src_lang", "en", "--tgt_lang", "fr", "--batch_size", "2",
            "--output_path", str(tmp_path / "out.fr")]
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); import translate\n"
            f"import xlm.progress; xlm.progress.PROGRESS_EVERY = 0\ntranslate.main({args!r})\n")
    proc = python("-c", code, input="\n".join(LINES) + "\n")
    lines = [line for line in proc.stderr.splitlines() if line.startswith("translate: ")]
    assert [line.split(",")[0] for line in lines] == [f"translate: {n}/7 sentences" for n in (2, 4, 6, 7)]
    assert all(re.fullmatch(r"translate: \d/7 sentences, [\d.]+ sentences/s, ETA \d+:\d\d:\d\d", line)
               for line in lines), lines
    assert "\r" not in proc.stderr  # no bar


FULL_AT_BATCH = """
import errno, os, sys
sys.path.insert(0, {root!r})
import translate
write, calls = translate.PartialOutput.write, []

def full(self, lines):  # a record after each batch, the disk full at the third
    calls.append(1)
    if len(calls) == 3:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    write(self, lines)
    self.record()

translate.PartialOutput.write = full
try:
    translate.main({args!r})
except translate.DataError as e:
    sys.exit(f"error: {{e}}")
"""


def test_a_full_disk_is_one_error_and_the_rerun_goes_on(checkpoint, tmp_path, monkeypatch):
    """The disk full while translations are written: one error naming the partial file and the lines kept
    (those of the last record); the rerun goes on after them. A closed standard input, or a folder in place
    of the partial file, is one error too."""
    flags = ["--model_path", checkpoint, "--src_lang", "en", "--tgt_lang", "fr", "--batch_size", "2"]
    text = "\n".join(LINES) + "\n"
    python("translate.py", *flags, "--output_path", tmp_path / "whole.fr", input=text)
    out = tmp_path / "parts.fr"
    args = [str(f) for f in [*flags, "--output_path", out]]
    proc = python("-c", FULL_AT_BATCH.format(root=str(ROOT), args=args), input=text, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: {out}.partial: cannot write it (No space left on device); 4 translated lines kept: rerun the "
        "command to go on")
    python("translate.py", *flags, "--output_path", out, input=text)
    assert out.read_text() == (tmp_path / "whole.fr").read_text()

    def no_room():  # every write past 0 bytes fails with EFBIG, as on a full disk: here at the output's last flush
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    small = subprocess.run([sys.executable, "translate.py", *map(str, flags), "--output_path", str(tmp_path / "s.fr")],
                           input=text, cwd=ROOT, capture_output=True, text=True, preexec_fn=no_room)
    assert small.returncode == 1 and small.stderr.strip().splitlines()[-1] == (
        f"error: {tmp_path / 's.fr'}.partial: cannot write it (File too large); 0 translated lines kept: rerun the "
        "command to go on"), small.stderr

    closed = subprocess.run(["bash", "-c", 'exec "$@" <&-', "-", sys.executable, "translate.py", *map(str, flags),
                             "--output_path", str(tmp_path / "closed.fr")], cwd=ROOT, capture_output=True, text=True)
    assert closed.returncode == 1 and closed.stderr.strip().splitlines()[-1] == (
        "error: standard input is closed: give the sentences to translate on it (< FILE)"), closed.stderr
    (tmp_path / "dir.fr.partial").mkdir()
    with pytest.raises(DataError) as raised:
        translate_in_process(monkeypatch, [*flags, "--output_path", tmp_path / "dir.fr"], text)
    assert str(raised.value) == f"{tmp_path / 'dir.fr.partial'}: is a folder, where the translations are written as " \
        "they are made"


@pytest.mark.parametrize("record, message", [
    ({"lines": -3, "bytes": 4}, "unreadable (its lines and bytes are not counts)"),
    ({"lines": 1, "bytes": 1.5}, "unreadable (its lines and bytes are not counts)"),
    ({"lines": "abc", "bytes": 4}, "unreadable (its lines and bytes are not counts)"),
    # more lines than the file holds: the output came out short, silently
    ({"lines": 10 ** 6, "bytes": 4}, "its first 4 bytes do not hold the 1000000 lines"),
])
def test_a_damaged_partial_record_is_refused(tmp_path, monkeypatch, record, message):
    """The record beside OUTPUT.partial is only ever written whole, but one edited by hand made a
    TypeError, an OSError of truncate(-5), or an output missing lines."""
    monkeypatch.syspath_prepend(str(ROOT))
    import translate
    out = tmp_path / "o.fr"
    (tmp_path / "o.fr.partial").write_text("a b\nc\nd\n")
    (tmp_path / "o.fr.partial.json").write_text(json.dumps({"identity": {"x": 1}, **record}))
    with pytest.raises(DataError, match=re.escape(message)):
        translate.PartialOutput(str(out), {"x": 1})
    (tmp_path / "o.fr.partial.json").write_text(json.dumps({"identity": {"x": 1}, "lines": 2, "bytes": 6}))
    kept = translate.PartialOutput(str(out), {"x": 1})
    assert kept.lines == 2 and (tmp_path / "o.fr.partial").read_text() == "a b\nc\n"
    kept.abandon()
