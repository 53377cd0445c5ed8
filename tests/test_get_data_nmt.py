"""get-data-nmt.sh offline, against a mirror folder of tiny archives with the real names and layout."""
import gzip
import io
import os
import subprocess
import sys
import tarfile

import pytest

from conftest import ROOT, SAMPLE, python, run

NEWS = {"en": ["news.2007.en.shuffled.gz", "news.2008.en.shuffled.gz"],
        "fr": ["news.2007.fr.shuffled.gz", "news.2008.fr.shuffled.gz", "news.2009.fr.shuffled.gz"]}


def sgm(lines, lang):
    segs = "".join(f'<seg id="{i + 1}">{line}</seg>\n' for i, line in enumerate(lines))
    return f'<refset setid="newstest" srclang="any" trglang="{lang}">\n<doc sysid="ref" docid="d1">\n' \
        f'{segs}</doc>\n</refset>\n'


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mirror")
    for lang, names in NEWS.items():
        lines = (SAMPLE / "mono" / f"train.{lang}").read_text(encoding="utf-8").splitlines()
        for k, name in enumerate(names):
            with gzip.open(folder / name, "wt", encoding="utf-8") as f:
                f.write("\n".join(lines[k * 400:(k + 1) * 400]) + "\n")
    with tarfile.open(folder / "dev.tgz", "w:gz") as tar:
        for split, name in (("valid", "newstest2013-ref"), ("test", "newstest2014-fren-ref")):
            for lang in ("en", "fr"):
                lines = (SAMPLE / "para" / f"{split}.en-fr.{lang}").read_text(encoding="utf-8").splitlines()[:50]
                # as real sets have them: an empty element (English), one over two lines (French)
                if lang == "en":
                    lines[2] = ""
                else:
                    lines[4] = lines[4].replace(" ", " \n", 1)
                data = sgm(lines, lang).encode("utf-8")
                info = tarfile.TarInfo(f"dev/{name}.{lang}.sgm")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return folder


def test_offline_run_writes_what_train_py_reads(mirror, tmp_path):
    data = tmp_path / "data"
    proc = run(["bash", str(ROOT / "get-data-nmt.sh"), "--src", "en", "--tgt", "fr", "--mirror", str(mirror),
                "--data_path", str(data), "--n_mono", "1000", "--codes", "500"])
    proc_dir = data / "processed" / "en-fr"
    expected = {"codes", "vocab.en", "vocab.fr", "vocab.en-fr", "train.en.pth", "train.fr.pth",
                "valid.en-fr.en.pth", "valid.en-fr.fr.pth", "test.en-fr.en.pth", "test.en-fr.fr.pth",
                "valid.en.pth", "valid.fr.pth", "test.en.pth", "test.fr.pth"}
    assert expected <= set(os.listdir(proc_dir))
    assert "Data summary" in proc.stdout
    assert len((data / "mono" / "en" / "all.en").read_text(encoding="utf-8").splitlines()) == 800  # all there is
    assert len((data / "mono" / "fr" / "all.fr").read_text(encoding="utf-8").splitlines()) == 1000  # --n_mono
    valid = {lang: (proc_dir / f"valid.en-fr.{lang}").read_text(encoding="utf-8").splitlines() for lang in ("en", "fr")}
    assert len(valid["en"]) == len(valid["fr"]) == 50 and valid["en"][2] == ""  # the sides aligned
    # the unsupervised MT command runs on it
    python("train.py", "--exp_name", "nmt", "--dump_path", tmp_path / "dumped", "--data_path", proc_dir,
           "--lgs", "en-fr", "--encoder_only", "false", "--ae_steps", "en,fr", "--bt_steps", "en-fr-en,fr-en-fr",
           "--emb_dim", "16", "--n_layers", "1", "--n_heads", "2", "--batch_size", "8", "--epoch_size", "32",
           "--max_epoch", "1", "--eval_bleu", "true")
    # a second run finds every output and redoes nothing
    before = {p: p.stat().st_mtime for p in proc_dir.glob("*.pth")}
    run(["bash", str(ROOT / "get-data-nmt.sh"), "--src", "en", "--tgt", "fr", "--mirror", str(mirror),
         "--data_path", str(data), "--n_mono", "1000", "--codes", "500"])
    assert before == {p: p.stat().st_mtime for p in proc_dir.glob("*.pth")}


def test_segments_by_the_rules_of_input_from_sgm():
    """tools/input_from_sgm.py (also compared with Moses' Perl script on 300 random documents, outside the
    repository): every element a line, empty ones included, lines of one element joined with nothing
    between them, ASCII whitespace runs made one space; other whitespace kept."""
    sgm_text = (b'<refset>\n<doc docid="d">\n<seg id="1"> a  b\t</seg>\n<seg id="2"></seg>\n<SEG id="3">'
                b'\nsplit wo\nrd </SEG>\r\n<seg id="4">\xc2\xa0nbsp\x0b</seg>\n<p>\n<seg id="5">x</seg> <seg id="6">y'
                b'</seg>\n</doc>\n</refset>\n')
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "input_from_sgm.py")], input=sgm_text,
                          capture_output=True, check=True)
    assert proc.stdout == b'a b\n\nsplit word\n\xc2\xa0nbsp\nx</seg> <seg id="6">y\n'


def test_corrupt_archive_is_a_clear_error(mirror, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in mirror.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    (broken / "news.2008.en.shuffled.gz").write_bytes((mirror / "news.2008.en.shuffled.gz").read_bytes()[:200])
    data = tmp_path / "data"
    proc = run(["bash", str(ROOT / "get-data-nmt.sh"), "--src", "en", "--tgt", "fr", "--mirror", str(broken),
                "--data_path", str(data), "--n_mono", "1000", "--codes", "500"], check=False)
    assert proc.returncode != 0 and "news.2008.en.shuffled.gz: corrupt archive" in proc.stderr
    leftovers = [p.name for p in (data / "mono" / "en").iterdir()]
    assert "news.2008.en.shuffled.gz" not in leftovers and not any(n.endswith(".part") for n in leftovers)
    assert not (data / "mono" / "en" / "all.en").exists()


def test_text_the_tokenizer_refuses_stops_the_script(mirror, tmp_path):
    """Bad UTF-8 in a news archive: the tokenizer's error, and nothing after it (no BPE codes learnt)."""
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in mirror.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    with gzip.open(broken / "news.2007.fr.shuffled.gz", "wb") as f:
        f.write("une phrase\n".encode() + b"\xff\xfe pas du texte\n")
    data = tmp_path / "data"
    proc = run(["bash", str(ROOT / "get-data-nmt.sh"), "--src", "en", "--tgt", "fr", "--mirror", str(broken),
                "--data_path", str(data), "--n_mono", "1000", "--codes", "500"], check=False)
    assert proc.returncode != 0 and "UTF-8" in proc.stderr, proc.stderr
    # the error names the file and its line, not the tokenizer's standard input
    assert proc.stderr.strip().startswith(f"error: {data / 'mono' / 'fr' / 'all.fr'}:2: invalid UTF-8"), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Learning" not in proc.stdout
    assert not (data / "mono" / "fr" / "all.fr.tok").exists()
    assert not (data / "mono" / "fr" / "all.fr.tok.tmp").exists()


def test_bad_arguments():
    for args, message in ((["--src", "en"], "--tgt not provided"), (["--src", "fr", "--tgt", "en"], "supported pairs"),
                          (["--src", "en", "--tgt", "fr", "--reload_codes", "missing"], "cannot locate BPE codes")):
        proc = run(["bash", str(ROOT / "get-data-nmt.sh"), *args], check=False)
        assert proc.returncode != 0 and message in proc.stderr


def test_bad_flags_are_refused_before_anything_is_written(tmp_path):
    """Numeric flags, a flag without its value, an unknown flag and a --mirror that is neither a folder nor a URL:
    one line naming the flag, before any download or any file written."""
    data = tmp_path / "data"
    not_a_folder = tmp_path / "mk.py"
    not_a_folder.write_text("x\n")
    base = ["--tgt", "fr", "--data_path", str(data), "--mirror", str(tmp_path)]
    for args, message in (
            (["--src", "en", *base, "--n_mono", "abc"], "--n_mono: expected a positive whole number, got 'abc'"),
            (["--src", "en", *base, "--n_mono", "0"], "--n_mono: expected a positive whole number, got '0'"),
            (["--src", "en", *base, "--n_mono", "-5"], "--n_mono: expected a positive whole number, got '-5'"),
            (["--src", "en", *base, "--codes", "abc"], "--codes: expected a positive whole number, got 'abc'"),
            ([*base, "--src"], "--src: missing value"),
            (["--src", "en", *base, "--bogus", "1"], "unknown argument --bogus"),
            (["--src", "en", *base, "--mirror", str(not_a_folder)], f"--mirror: '{not_a_folder}' is neither"),
            (["--src", "en", *base, "--mirror", "no/such/folder"], "--mirror: 'no/such/folder' is neither")):
        proc = run(["bash", str(ROOT / "get-data-nmt.sh"), *args], check=False)
        assert proc.returncode != 0 and len(proc.stderr.splitlines()) == 1, (args, proc.stderr)
        assert proc.stderr.startswith(f"error: get-data-nmt.sh: {message}"), (args, proc.stderr)
        assert not data.exists(), args


def test_reloaded_codes_and_vocabulary_are_read_before_any_work(tmp_path):
    """--reload_codes/--reload_vocab: a file that would fail hours later, at binarization, is refused first; and one
    other than the copy an earlier run left (which the files beside it were made with) is refused, not ignored."""
    codes, vocab, other = tmp_path / "codes", tmp_path / "vocab", tmp_path / "other_vocab"
    codes.write_text("t h 9\nth e 8\n")
    vocab.write_text("the 9\nof 4\n")
    other.write_text("the 9\nand 5\n")
    data = tmp_path / "data"
    command = ["bash", str(ROOT / "get-data-nmt.sh"), "--src", "en", "--tgt", "fr", "--mirror", str(tmp_path),
               "--data_path", str(data), "--reload_codes", str(codes)]
    bad = tmp_path / "bad_vocab"
    bad.write_text("the 5\nof 9\n")
    proc = run([*command, "--reload_vocab", str(bad)], check=False)
    assert proc.returncode != 0 and proc.stderr.startswith(
        f"error: get-data-nmt.sh: --reload_vocab: {bad}:2: counts must not increase"), proc.stderr
    proc = run([*command, "--reload_vocab", str(vocab), "--reload_codes", str(vocab)], check=False)
    assert proc.stderr.startswith(f"error: get-data-nmt.sh: --reload_codes: {vocab}:"), proc.stderr
    assert not data.exists()
    processed = data / "processed" / "en-fr"
    processed.mkdir(parents=True)
    (processed / "vocab.en-fr").write_text(other.read_text())  # an earlier run's copy
    proc = run([*command, "--reload_vocab", str(vocab)], check=False)
    assert proc.returncode != 0 and proc.stderr.startswith(
        f"error: get-data-nmt.sh: --reload_vocab {vocab} differs from {processed / 'vocab.en-fr'}"), proc.stderr
    assert os.listdir(data) == ["processed"]


def test_n_mono_and_archives_without_final_newline(tmp_path):
    """--n_mono keeps that many lines; an archive whose last line has no newline is not joined to the next one."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for lang, names in NEWS.items():
        for k, name in enumerate(names):
            with gzip.open(mirror / name, "wt", encoding="utf-8") as f:
                f.write("\n".join(f"{lang} news {k} line {i} ." for i in range(5)))  # no final newline
    (mirror / "dev.tgz").write_bytes(b"not an archive")  # the run stops there, after the monolingual data
    data = tmp_path / "data"
    proc = run(["bash", str(ROOT / "get-data-nmt.sh"), "--src", "en", "--tgt", "fr", "--mirror", str(mirror),
                "--data_path", str(data), "--n_mono", "12", "--codes", "20"], check=False)
    assert (data / "mono" / "en" / "all.en").read_text(encoding="utf-8").splitlines() == \
        [f"en news {k} line {i} ." for k in range(2) for i in range(5)]
    assert len((data / "mono" / "fr" / "all.fr").read_text(encoding="utf-8").splitlines()) == 12
    assert (data / "mono" / "fr" / "all.fr").read_text(encoding="utf-8").splitlines()[5] == "fr news 1 line 0 ."
    assert "dev.tgz: corrupt archive" in proc.stderr
    assert not list(data.rglob("*.tmp"))


def test_archives_missing_from_a_mirror_folder_are_named_before_any_work(mirror, tmp_path):
    partial = tmp_path / "partial"
    partial.mkdir()
    for f in mirror.iterdir():
        if f.name not in ("news.2009.fr.shuffled.gz", "dev.tgz"):
            (partial / f.name).write_bytes(f.read_bytes())
    data = tmp_path / "data"
    proc = run(["bash", str(ROOT / "get-data-nmt.sh"), "--src", "en", "--tgt", "fr", "--mirror", str(partial),
                "--data_path", str(data)], check=False)
    assert proc.returncode != 0 and proc.stderr == \
        f"error: get-data-nmt.sh: not in the mirror {partial}: news.2009.fr.shuffled.gz dev.tgz\n"
    assert not [p for p in data.rglob("*") if p.is_file()]
