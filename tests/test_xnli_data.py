"""get-data-xnli.sh and prepare-xnli.sh offline, against a mirror folder of tiny archives with the real names
and internal layout (XNLI-1.0/xnli.{dev,test}.tsv with their 19 columns, XNLI-MT-1.0/multinli/*.tsv)."""
import importlib.util
import os
import zipfile

import pytest

from conftest import ROOT, SAMPLE, run
from xlm.data import bpe
from xlm.data.binarized import load_binarized
from xlm.data.dictionary import Dictionary
from xlm.data.tokenize import lowercase_and_remove_accent, tokenize
from xlm.evaluation.classification import XNLI_LABELS, TaskData

LANGS = ["de", "en", "fr"]
XNLI_COLUMNS = ["language", "gold_label", "sentence1_binary_parse", "sentence2_binary_parse", "sentence1_parse",
                "sentence2_parse", "sentence1", "sentence2", "promptID", "pairID", "genre", "label1", "label2",
                "label3", "label4", "label5", "sentence1_tokenized", "sentence2_tokenized", "match"]
# (language, label, premise, hypothesis), interleaved across languages; ar and zh are not asked for
DEV = [
    ("en", "entailment", "Hello, World! Élan is here.", "The world isn't empty."),
    ("fr", "contradiction", "L'élève a réussi l'examen.", "Il a échoué à l'examen."),
    ("de", "neutral", "Die Übung ist schwer, sagt Jürgen.", "Jürgen übt gern."),
    ("ar", "neutral", "مرحبا بالعالم", "مرحبا"),
    ("en", "contradiction", 'He said: "No way."', "Nobody spoke."),
    ("fr", "entailment", "Où est la gare ?", "Il y a une gare."),
    ("zh", "entailment", "你好，世界。", "世界"),
    ("de", "contradiction", "Das Wetter ist schön.", "Es regnet."),
    ("en", "neutral", "Cats sleep a lot.", "Dogs bark at night."),
]
TEST = [
    ("fr", "neutral", "Les enfants jouent dehors.", "Il fait beau."),
    ("en", "entailment", "The café opened in 1999.", "The cafe is old."),
    ("de", "entailment", "Der Bäcker backt Brot.", "Es gibt Brot."),
    ("en", "neutral", "A man reads (slowly).", "He likes books."),
    ("fr", "contradiction", "Le chat dort.", "Le chat court."),
    ("de", "neutral", "Sie liest ein Buch.", "Das Buch ist neu."),
]
TRAIN = [
    ("Conceptually cream skimming has two basic dimensions.", "Product and geography are what make it work.",
     "neutral"),
    ("You know during the season, I guess.", "You lose the things to the following level.", "entailment"),
    ("One of our number will carry out your instructions minutely.", "A member of my team will execute them.",
     "entailment"),
    ("How do you know? All this is their information again.", "This information belongs to them.", "entailment"),
    ("Yeah, I tell you what, Rémy.", "Tennis is the best sport.", "neutral"),
    ("My walkman broke so I'm upset now.", "I'm upset that my walkman broke.", "contradictory"),
]
# XNLI-MT's French translation of the train set (raw text here: tokenized by get-data-xnli.sh as fr's test set)
TRAIN_FR = [("L'élève a lu le livre, dit-il.", "Il n'a rien lu.", "contradictory"),
            ("Où est la gare ?", "La gare est loin.", "neutral"), ("Le café ouvre à 8h.", "Il ouvre.", "entailment")]


def xnli_tsv(rows):
    lines = ["\t".join(XNLI_COLUMNS)]
    for i, (lg, label, p, h) in enumerate(rows):
        cols = [lg, label, f"( {p} )", f"( {h} )", f"(ROOT {p})", f"(ROOT {h})", p, h, str(100 + i),
                f"{i}n", "fiction", label, label, label, label, label, p, h, "False"]
        lines.append("\t".join(cols))
    return "\n".join(lines) + "\n"


def expected(rows, lg):
    return [(lowercase_and_remove_accent(tokenize(p, lg)), lowercase_and_remove_accent(tokenize(h, lg)), label)
            for lang, label, p, h in rows if lang == lg]


EXPECTED = {("train", "en"): [(lowercase_and_remove_accent(p), lowercase_and_remove_accent(h),
                               "contradiction" if y == "contradictory" else y) for p, h, y in TRAIN]}
EXPECTED.update({(split, lg): expected(rows, lg) for split, rows in (("valid", DEV), ("test", TEST)) for lg in LANGS})


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mirror")
    with zipfile.ZipFile(folder / "XNLI-1.0.zip", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("XNLI-1.0/xnli.dev.tsv", xnli_tsv(DEV))
        z.writestr("XNLI-1.0/xnli.test.tsv", xnli_tsv(TEST))
        z.writestr("XNLI-1.0/xnli.dev.jsonl", "{}\n")
        z.writestr("__MACOSX/XNLI-1.0/._xnli.dev.tsv", "junk")
    train = "premise\thypo\tlabel\n" + "".join("\t".join(row) + "\n" for row in TRAIN)
    with zipfile.ZipFile(folder / "XNLI-MT-1.0.zip", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("XNLI-MT-1.0/multinli/multinli.train.en.tsv", train)
        z.writestr("XNLI-MT-1.0/multinli/multinli.train.fr.tsv",
                   "premise\thypo\tlabel\n" + "".join("\t".join(row) + "\n" for row in TRAIN_FR))
        z.writestr("XNLI-MT-1.0/xnli/xnli.dev.en.tsv", "premise\thypo\tlabel\n")
    return folder


@pytest.fixture(scope="module")
def codes_vocab(tmp_path_factory):
    """30 BPE codes and their vocabulary, learned on a few lower-cased sample sentences of each language."""
    folder = tmp_path_factory.mktemp("bpe")
    text = folder / "text"
    with open(text, "w", encoding="utf-8") as f:
        for lg in LANGS:
            lines = (SAMPLE / "mono" / f"train.{lg}").read_text(encoding="utf-8").splitlines()[:100]
            f.writelines(lowercase_and_remove_accent(tokenize(line, lg)) + "\n" for line in lines)
    codes, vocab = folder / "codes", folder / "vocab"
    with open(codes, "w", encoding="utf-8") as f:
        bpe.write_codes(bpe.learn_bpe([str(text)], 300), f)
    bpe.apply_bpe_file(str(text), str(folder / "text.bpe"), str(codes))
    with open(vocab, "w", encoding="utf-8") as f:
        bpe.write_vocab(bpe.get_vocab([str(folder / "text.bpe")]), f)
    return codes, vocab


def get_data(mirror, data, *args, check=True):
    return run(["bash", str(ROOT / "get-data-xnli.sh"), "--mirror", str(mirror), "--data_path", str(data),
                "--langs", ",".join(LANGS), *args], check=check)


def prepare(codes, vocab, data, *args, check=True):
    return run(["bash", str(ROOT / "prepare-xnli.sh"), "--codes", str(codes), "--vocab", str(vocab),
                "--input", str(data / "xnli" / "XNLI-1.0"), "--output", str(data / "processed" / "eval" / "XNLI"),
                "--langs", ",".join(LANGS), *args], check=check)


def read_lines(path):
    return path.read_text(encoding="utf-8").splitlines()


def test_offline_run_writes_what_glue_xnli_reads(mirror, codes_vocab, tmp_path):
    data = tmp_path / "data"
    get_data(mirror, data)
    xnli = data / "xnli" / "XNLI-1.0"
    # the original's text files: header, then premise<TAB>hypo<TAB>label, in the order of the source
    for (split, lg), rows in EXPECTED.items():
        lines = read_lines(xnli / f"{lg}.{split}")
        assert lines[0] == "premise\thypo\tlabel"
        assert [tuple(line.split("\t")) for line in lines[1:]] == rows, (split, lg)
    assert read_lines(xnli / "en.valid")[1] == "hello , world ! elan is here .\tthe world isn 't empty .\tentailment"
    assert read_lines(xnli / "en.train")[6] == "my walkman broke so i'm upset now.\ti'm upset that my walkman broke." \
                                               "\tcontradiction"
    assert not (xnli / "ar.valid").exists() and not (xnli / "zh.valid").exists()
    assert not (data / "xnli" / "XNLI-1.0.zip").exists() and not list(xnli.glob(".tmp*"))

    # a file without the header line loses no example
    (xnli / "de.test").write_text("\n".join(read_lines(xnli / "de.test")[1:]) + "\n", encoding="utf-8")
    codes, vocab = codes_vocab
    prepare(codes, vocab, data)
    out = data / "processed" / "eval" / "XNLI"
    dico = Dictionary.read_vocab(str(vocab))
    produced = set(os.listdir(out))
    for (split, lg), rows in EXPECTED.items():
        assert read_lines(out / f"{split}.label.{lg}") == [y for _, _, y in rows], (split, lg)
        for k, s in enumerate(("s1", "s2")):
            text = read_lines(out / f"{split}.{s}.{lg}")
            assert [bpe.remove_bpe(line) for line in text] == [row[k] for row in rows], (split, lg, s)
            corpus = load_binarized(str(out / f"{split}.{s}.{lg}.pth"))
            assert len(corpus) == len(rows) and corpus.dico == dico
            assert [len(line.split()) for line in text] == corpus.lengths.tolist()
            produced -= {f"{split}.{s}.{lg}", f"{split}.{s}.{lg}.pth"}
        produced.discard(f"{split}.label.{lg}")
    assert produced == set()  # no train for fr/de, no leftovers

    # glue-xnli.py's reader takes them, with the labels in order
    reader = TaskData(str(data / "processed"), dico)
    for (split, lg), rows in EXPECTED.items():
        labelled, _ = reader.split("XNLI", split, lg)
        assert [XNLI_LABELS[i] for i in labelled.labels] == [y for _, _, y in rows]

    # a second run finds every output and redoes nothing
    before = {p: p.stat().st_mtime_ns for p in list(out.iterdir()) + list(xnli.iterdir())}
    assert "skipped" in get_data(mirror, data).stdout
    assert "skipped" in prepare(codes, vocab, data).stdout
    assert before == {p: p.stat().st_mtime_ns for p in list(out.iterdir()) + list(xnli.iterdir())}

    # the same command with --train_langs en,fr then adds fr.train, XNLI-MT's French translation of the train
    # set, tokenized and lower-cased as fr's valid and test sets; prepare-xnli.sh then writes its train files,
    # which glue-xnli.py reads for --xnli_train_lang fr (the paper's translate-train)
    get_data(mirror, data, "--train_langs", "en,fr")
    expected_fr = [(lowercase_and_remove_accent(tokenize(p, "fr")), lowercase_and_remove_accent(tokenize(h, "fr")),
                    "contradiction" if y == "contradictory" else y) for p, h, y in TRAIN_FR]
    assert [tuple(line.split("\t")) for line in read_lines(xnli / "fr.train")[1:]] == expected_fr
    assert expected_fr[0][0] == "l' eleve a lu le livre , dit-il ."  # tokenized: not the raw text lower-cased
    assert [tuple(line.split("\t")) for line in read_lines(xnli / "en.train")[1:]] == EXPECTED[("train", "en")]
    assert not (xnli / "de.train").exists()
    prepare(codes, vocab, data)
    assert read_lines(out / "train.label.fr") == [y for _, _, y in expected_fr]
    assert [bpe.remove_bpe(line) for line in read_lines(out / "train.s1.fr")] == [p for p, _, _ in expected_fr]
    assert not (out / "train.s1.de.pth").exists()
    labelled, _ = TaskData(str(data / "processed"), dico).split("XNLI", "train", "fr")
    assert [XNLI_LABELS[i] for i in labelled.labels] == [y for _, _, y in expected_fr]
    assert {p: p.stat().st_mtime_ns for p in before} == before  # what the first run made is kept as it was


def test_corrupt_archive_is_a_clear_error(mirror, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in mirror.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    (broken / "XNLI-1.0.zip").write_bytes((mirror / "XNLI-1.0.zip").read_bytes()[:300])
    data = tmp_path / "data"
    proc = get_data(broken, data, check=False)
    assert proc.returncode != 0
    assert proc.stderr.strip() == f"error: get-data-xnli.sh: {broken}/XNLI-1.0.zip: corrupt archive"
    # nothing unpacked, nothing half-written; the good archive was checked and kept for the next run
    assert sorted(os.listdir(data / "xnli")) == ["XNLI-MT-1.0.zip"]


@pytest.mark.skipif(importlib.util.find_spec("jieba") is not None, reason="jieba is installed")
def test_a_missing_word_segmenter_stops_before_any_download(mirror, tmp_path):
    data = tmp_path / "data"
    proc = run(["bash", str(ROOT / "get-data-xnli.sh"), "--mirror", str(mirror), "--data_path", str(data),
                "--langs", "en,zh"], check=False)
    assert proc.returncode == 1 and proc.stderr.strip() == (
        "error: get-data-xnli.sh: tokenizing 'zh' needs the jieba word segmenter: pip install 'xlm[zh]'; install it or "
        "leave zh out with --langs and --train_langs")
    assert not data.exists()


def test_prepare_errors(codes_vocab, tmp_path):
    codes, vocab = codes_vocab
    data = tmp_path / "data"
    xnli = data / "xnli" / "XNLI-1.0"
    xnli.mkdir(parents=True)
    out = data / "processed" / "eval" / "XNLI"
    for split in ("train", "valid", "test"):
        (xnli / f"en.{split}").write_text("premise\thypo\tlabel\na b\tc\tneutral\n", encoding="utf-8")
    for args, message in (
            (["--codes", str(tmp_path / "missing")], f"error: prepare-xnli.sh: BPE codes {tmp_path}/missing not found"),
            (["--vocab", str(tmp_path / "missing")],
             f"error: prepare-xnli.sh: vocabulary {tmp_path}/missing not found"),
            (["--langs", "en,fr"], f"error: prepare-xnli.sh: {xnli}/fr.valid not found"),
            (["--langs", "en,xx"], "error: prepare-xnli.sh: --langs: 'xx' is not an XNLI language"),
            (["--langs", "en,en"], "error: prepare-xnli.sh: --langs: 'en' given twice")):
        proc = prepare(codes, vocab, data, *args, check=False)
        assert proc.returncode != 0 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert proc.stderr.startswith(message), proc.stderr
        assert not out.exists()
    (xnli / "en.valid").write_text("premise\thypo\tlabel\na b\tc\tneutral\nd\te\tcontradictory\n", encoding="utf-8")
    proc = prepare(codes, vocab, data, "--langs", "en", check=False)
    assert proc.returncode != 0 and f"{xnli}/en.valid:3: not premise<TAB>hypo<TAB>label" in proc.stderr
    assert list(out.iterdir()) == []  # every file is checked before anything is written
    # a malformed vocabulary, or the codes and the vocabulary swapped: one line, before anything is written
    (xnli / "en.valid").write_text("premise\thypo\tlabel\na b\tc\tneutral\n", encoding="utf-8")
    bad_vocab = tmp_path / "bad_vocab"
    bad_vocab.write_text(vocab.read_text(encoding="utf-8") + "lonely\n", encoding="utf-8")
    line = len(bad_vocab.read_text(encoding="utf-8").splitlines())
    for c, v, message in ((codes, bad_vocab, f"--vocab: {bad_vocab}:{line}: expected 'WORD COUNT', got 'lonely'"),
                          (vocab, codes, f"--codes: {vocab}: 'WORD COUNT' on every line: a vocabulary")):
        proc = prepare(c, v, data, "--langs", "en", check=False)
        assert proc.returncode != 0 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert proc.stderr.startswith(f"error: prepare-xnli.sh: {message}"), proc.stderr
        assert list(out.iterdir()) == []
    # a job that fails (here binarization to a name taken by a folder) fails the script, after the others, and
    # no label file is put in place beside missing sentence files
    (out / "valid.s1.en.pth").mkdir()
    proc = prepare(codes, vocab, data, "--langs", "en", check=False)
    assert proc.returncode != 0
    assert proc.stderr.strip().endswith("error: 1 job(s) failed (their errors are above, or in their logs)"), \
        proc.stderr
    assert (out / "valid.s2.en.pth").is_file() and not list(out.glob("*.label.*"))


def test_prepare_arguments(codes_vocab, tmp_path):
    codes, vocab = codes_vocab
    for args, message in ((["--bogus"], "unknown argument --bogus"), (["--bogus", "1"], "unknown argument --bogus"),
                          (["--langs"], "--langs: missing value"), (["stray"], "unknown argument stray")):
        proc = prepare(codes, vocab, tmp_path, *args, check=False)
        assert proc.returncode != 0 and proc.stderr.strip() == f"error: prepare-xnli.sh: {message}", (args, proc.stderr)
    assert not (tmp_path / "processed").exists()


def test_crlf_line_ends(tmp_path):
    """MultiNLI / XNLI files saved with CRLF line ends: the CR is not content (labels renamed, no CR written)."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    with zipfile.ZipFile(mirror / "XNLI-1.0.zip", "w") as z:
        z.writestr("XNLI-1.0/xnli.dev.tsv", xnli_tsv(DEV).replace("\n", "\r\n"))
        z.writestr("XNLI-1.0/xnli.test.tsv", xnli_tsv(TEST).replace("\n", "\r\n"))
    train = "premise\thypo\tlabel\r\n" + "".join("\t".join(row) + "\r\n" for row in TRAIN)
    with zipfile.ZipFile(mirror / "XNLI-MT-1.0.zip", "w") as z:
        z.writestr("XNLI-MT-1.0/multinli/multinli.train.en.tsv", train)
    data = tmp_path / "data"
    run(["bash", str(ROOT / "get-data-xnli.sh"), "--mirror", str(mirror), "--data_path", str(data), "--langs", "en"])
    xnli = data / "xnli" / "XNLI-1.0"
    for split in ("train", "valid", "test"):
        assert "\r" not in (xnli / f"en.{split}").read_bytes().decode("utf-8"), split
        lines = read_lines(xnli / f"en.{split}")
        assert [tuple(line.split("\t")) for line in lines[1:]] == EXPECTED[(split, "en")], split


def test_get_data_arguments(mirror, tmp_path):
    not_a_folder = tmp_path / "mk.py"
    not_a_folder.write_text("x\n")
    for bad in (str(not_a_folder), "no/such/folder"):
        proc = run(["bash", str(ROOT / "get-data-xnli.sh"), "--mirror", bad, "--data_path", str(tmp_path)],
                   check=False)
        assert proc.returncode != 0 and proc.stderr.strip() == \
            f"error: get-data-xnli.sh: --mirror: '{bad}' is neither an existing folder nor an http(s):// or file:// URL"
    proc = run(["bash", str(ROOT / "get-data-xnli.sh"), "--data_path", str(tmp_path), "--bogus"], check=False)
    assert proc.returncode != 0 and proc.stderr.strip() == "error: get-data-xnli.sh: unknown argument --bogus"
    proc = get_data(mirror, tmp_path, "--langs", "en,xx", check=False)
    assert proc.returncode != 0 and "--langs: 'xx' is not an XNLI language" in proc.stderr
    proc = get_data(mirror, tmp_path, "--train_langs", "en,xx", check=False)
    assert proc.returncode != 0 and "--train_langs: 'xx' is not an XNLI language" in proc.stderr
    if importlib.util.find_spec("jieba") is None:
        proc = get_data(mirror, tmp_path, "--langs", "en,zh", check=False)
        assert proc.returncode != 0 and len(proc.stderr.strip().splitlines()) == 1
        assert "jieba" in proc.stderr and "leave zh out with --langs" in proc.stderr
    assert not (tmp_path / "xnli").exists()  # failed before downloading anything
