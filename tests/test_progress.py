"""Progress of long work where stderr is no terminal (a batch job's log): a line every PROGRESS_EVERY
seconds with the rate and the time left (xlm/progress.py), from translate.py (tests/test_translate.py),
preprocess.py and tools/tokenize.sh."""
import os
import re
import subprocess
import sys

import xlm.progress
from xlm.progress import Progress

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_lines_give_the_rate_since_the_start_and_the_time_left(monkeypatch, capsys):
    clock = iter([100.0, 110.0, 115.0, 200.0])  # the start, then three updates
    monkeypatch.setattr(xlm.progress.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(xlm.progress, "PROGRESS_EVERY", 10.0)
    progress = Progress("translate", total=1000, unit="sentences", initial=100)
    progress.update(200)  # 10 s in: 200 sentences since the start (the first 100 were a stopped run's)
    progress.update(100)  # 5 s after the last line: none
    progress.update(100)
    assert capsys.readouterr().err.splitlines() == [
        "translate: 300/1,000 sentences, 20.0 sentences/s, ETA 0:00:35",
        "translate: 500/1,000 sentences, 4.0 sentences/s, ETA 0:02:05"]


def test_bytes_and_an_unknown_total(monkeypatch, capsys):
    monkeypatch.setattr(xlm.progress, "PROGRESS_EVERY", 0.0)
    with Progress("tokenize en", unit="B") as progress:
        progress.update(2_500_000)
    with Progress(None, total=10) as quiet:
        quiet.update(5)
    assert re.fullmatch(r"tokenize en: 2\.5 MB, [\d.]+ [kMG]?B/s\n", capsys.readouterr().err)


def run(code, stdin):
    return subprocess.run([sys.executable, "-c", "import xlm.progress; xlm.progress.PROGRESS_EVERY = 0\n" + code],
                          stdin=stdin, capture_output=True, text=True, cwd=ROOT, check=True)


def test_preprocess_and_tokenize_report_in_a_batch_job(tmp_path):
    text = tmp_path / "train.en"
    text.write_text("".join(f"Sentence number {i}, with words.\n" for i in range(3000)))
    with open(text) as stdin:
        tokenized = run("from xlm.data.tokenize import main; main(['en', '--threads', '1'])", stdin)
    assert tokenized.stdout.splitlines()[:2] == ["Sentence number 0 , with words .", "Sentence number 1 , with words ."]
    lines = tokenized.stderr.splitlines()
    # blocks of 2,000 lines: a line after each, of the file's size (stdin is a file here)
    sizes = [len(line) for line in text.read_bytes().splitlines(keepends=True)]
    read = [f"{sum(sizes[:2000]) / 1e3:.1f} kB", f"{sum(sizes) / 1e3:.1f} kB"]
    assert [line.split(",")[0] for line in lines] == [f"tokenize en: {n}/{read[1]}" for n in read]
    assert all(line.endswith(tuple(f"ETA 0:00:0{i}" for i in range(10))) for line in lines), lines

    (tmp_path / "tok.en").write_text(tokenized.stdout)
    (tmp_path / "vocab").write_text("".join(f"{w} {100 - i}\n" for i, w in enumerate(
        "Sentence number , with words .".split())))
    binarized = run(f"import preprocess; preprocess.main([{str(tmp_path / 'vocab')!r}, {str(tmp_path / 'tok.en')!r}, "
                    "'--threads', '1'])", subprocess.DEVNULL)
    assert re.search(r"^binarize tok\.en: [\d.]+ kB/[\d.]+ kB, [\d.]+ [kMG]?B/s, ETA \d:\d\d:\d\d$", binarized.stderr,
                     re.MULTILINE), binarized.stderr
    assert "\r" not in tokenized.stderr + binarized.stderr  # no bar
