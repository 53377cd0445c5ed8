"""The README's first command, end to end, as a user runs it."""
import os

from conftest import ROOT, run
from xlm.data import load_binarized
from xlm.data.bpe import remove_bpe


def test_run_sample_produces_the_original_file_names(sample_data):
    out = sample_data
    names = {p.name for p in out.glob("*.pth")}
    expected = {f"{s}.{lg}.pth" for s in ("train", "valid", "test") for lg in ("en", "fr", "de")}
    expected |= {f"{s}.{p}.{lg}.pth" for s in ("train", "valid", "test")
                 for p, lgs in (("en-fr", ("en", "fr")), ("de-en", ("de", "en"))) for lg in lgs}
    assert names == expected
    assert len((out / "codes").read_text(encoding="utf-8").splitlines()) == 3000
    # the ids decode back to the BPE'd text, which decodes back to the tokenized text
    corpus = load_binarized(out / "valid.en-fr.fr.pth")
    bpe_lines = (out / "valid.en-fr.fr").read_text(encoding="utf-8").splitlines()
    tok_lines = (out / "tok" / "valid.en-fr.fr").read_text(encoding="utf-8").splitlines()
    for i in (0, 17, len(corpus) - 1):
        assert corpus[i].tolist() == [corpus.dico.index(w) for w in bpe_lines[i].split()]
        assert remove_bpe(bpe_lines[i]) == tok_lines[i]
    assert len(load_binarized(out / "train.en-fr.en.pth")) == len(load_binarized(out / "train.en-fr.fr.pth"))
    # a second run skips every step whose output exists, and prints the summary
    before = {p: os.path.getmtime(p) for p in out.glob("*.pth")}
    proc = run(["env", f"OUT={out}", "N_CODES=3000", "PRETRAIN=0", "bash", str(ROOT / "run-sample.sh")])
    assert before == {p: os.path.getmtime(p) for p in out.glob("*.pth")}
    assert "train.en-fr.fr.pth" in proc.stdout and "sentences" in proc.stdout


def test_run_sample_stops_at_the_first_failing_step(sample_data, tmp_path):
    """learnbpe refusing its number of codes stops the script there: no codes, BPE or binarized files."""
    out = tmp_path / "out dir"
    out.mkdir()
    (out / "tok").symlink_to(sample_data / "tok")
    proc = run(["env", f"OUT={out}", "N_CODES=many", "PRETRAIN=0", "bash", str(ROOT / "run-sample.sh")], check=False)
    assert proc.returncode != 0
    assert "learn many BPE codes" in proc.stdout and "got 'many'" in proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["codes.tmp", "tok"]


def test_codes_learned_anew_redo_what_the_earlier_codes_made(sample_data, tmp_path):
    """Codes of another size than N_CODES are refused; codes learned anew (the file removed) make the BPE'd
    files, the vocabulary and the binarized files again, not only the codes."""
    out = tmp_path / "out"
    (out / "tok").mkdir(parents=True)
    for f in (sample_data / "tok").iterdir():  # the first 300 lines of each tokenized file: a quick rerun
        (out / "tok" / f.name).write_text("".join(f.open(encoding="utf-8").readlines()[:300]), encoding="utf-8")
    (out / "codes").write_text((sample_data / "codes").read_text(encoding="utf-8"), encoding="utf-8")
    proc = run(["env", f"OUT={out}", "N_CODES=200", "PRETRAIN=0", "bash", str(ROOT / "run-sample.sh")], check=False)
    assert proc.returncode == 1 and proc.stderr.strip() == f"error: run-sample.sh: {out}/codes was learnt with " \
        f"N_CODES=3000, not N_CODES=200: remove {out}/codes (the files made with it are then made again) or " \
        "choose another OUT"
    (out / "codes").unlink()
    (out / "vocab").write_text("stale 1\n")  # what the earlier codes made
    (out / "valid.en").write_text("stale\n")
    run(["env", f"OUT={out}", "N_CODES=200", "PRETRAIN=0", "bash", str(ROOT / "run-sample.sh")])
    assert len((out / "codes").read_text().splitlines()) == 200 and "stale" not in (out / "vocab").read_text()
    assert (out / "valid.en").read_text() != "stale\n" and load_binarized(out / "valid.en.pth").dico.index("stale") == 3
    # more codes than the text has pairs: learnbpe stops early, and a rerun of the same command goes on
    (out / "codes").unlink()
    run(["env", f"OUT={out}", "N_CODES=100000", "PRETRAIN=0", "bash", str(ROOT / "run-sample.sh")])
    assert len((out / "codes").read_text().splitlines()) < 100000
    run(["env", f"OUT={out}", "N_CODES=100000", "PRETRAIN=0", "bash", str(ROOT / "run-sample.sh")])
