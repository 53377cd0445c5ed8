"""get-data-glue.sh and prepare-glue.sh offline, against a mirror folder of tiny files with the GLUE benchmark's
names and layouts (<TASK>.zip, QNLIv2.zip, QQP-clean.zip, MRPC's msr_paraphrase_*.txt and mrpc_dev_ids.tsv)."""
import os
import zipfile

import pytest

from conftest import ROOT, SAMPLE, run
from xlm.data import bpe
from xlm.data.binarized import load_binarized
from xlm.data.dictionary import Dictionary
from xlm.data.tokenize import lowercase_and_remove_accent, tokenize
from xlm.evaluation.classification import TaskData
from xlm.fileio import DataError

SENTENCES = (SAMPLE / "mono" / "train.en").read_text(encoding="utf-8").splitlines()[:200]
SPLITS = ("train", "dev", "test")


def sentences(start, n):
    return SENTENCES[start:start + n]


def tok(s):
    return lowercase_and_remove_accent(tokenize(s, "en"))


def tsv(rows, header=None):
    return "".join("\t".join(map(str, row)) + "\n" for row in ([header] if header else []) + rows)


def build_mirror(folder):
    """Writes the files of every task into `folder`; returns {(task, split): [expected .xlm.tsv rows]}."""
    expected = {}
    files = {}
    pos = 0

    def take(n):
        nonlocal pos
        pos += n
        return sentences(pos - n, n)

    # CoLA: train/dev without header (source, label, original label, sentence); test: index, sentence
    for split in SPLITS:
        s = take(3)
        if split == "test":
            files[f"CoLA/{split}.tsv"] = tsv([(i, x) for i, x in enumerate(s)], ("index", "sentence"))
            expected["CoLA", split] = [(tok(x),) for x in s]
        else:
            labels = [1, 0, 1]
            files[f"CoLA/{split}.tsv"] = tsv([("gj04", y, "*" if not y else "", x) for x, y in zip(s, labels)])
            expected["CoLA", split] = [(tok(x), str(y)) for x, y in zip(s, labels)]
    # SST-2: already tokenized and lower-cased; punctuation normalisation only, the Perl scripts' output
    # written out (replace-unicode-punctuation | normalize-punctuation -l en | remove-non-printing-char: the
    # trailing space stays, a zero-width space becomes a space)
    sst = ["it 's a charming and often affecting journey . ", "unflinchingly bleak and desperate ",
           "the movie does n't « work » , sadly .", "zero\u200bwidth  here"]
    normalized = ["it 's a charming and often affecting journey . ", "unflinchingly bleak and desperate ",
                  "the movie does n't \" work \" , sadly .", "zero width here"]
    for split in SPLITS:
        if split == "test":
            files[f"SST-2/{split}.tsv"] = tsv([(i, x) for i, x in enumerate(sst)], ("index", "sentence"))
            expected["SST-2", split] = [(x,) for x in normalized]
        else:
            files[f"SST-2/{split}.tsv"] = tsv([(x, i % 2) for i, x in enumerate(sst)], ("sentence", "label"))
            expected["SST-2", split] = [(x, str(i % 2)) for i, x in enumerate(normalized)]
    # QQP: id, qid1, qid2, question1, question2, is_duplicate; test: id, question1, question2
    for split in SPLITS:
        a, b = take(3), take(3)
        if split == "test":
            files[f"QQP/{split}.tsv"] = tsv([(i, x, y) for i, (x, y) in enumerate(zip(a, b))],
                                            ("id", "question1", "question2"))
            expected["QQP", split] = [(tok(x), tok(y)) for x, y in zip(a, b)]
        else:
            files[f"QQP/{split}.tsv"] = tsv([(i, 2 * i, 2 * i + 1, x, y, i % 2) for i, (x, y) in enumerate(zip(a, b))],
                                            ("id", "qid1", "qid2", "question1", "question2", "is_duplicate"))
            expected["QQP", split] = [(tok(x), tok(y), str(i % 2)) for i, (x, y) in enumerate(zip(a, b))]
    # STS-B: 10 columns, score last (not in test)
    header = ("index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2",
              "score")
    for split in SPLITS:
        a, b = take(3), take(3)
        scores = ["5.000", "0.750", "3.200"]
        rows = [(i, "main-captions", "MSRvid", "2012test", i, "none", "none", x, y, z)
                for i, (x, y, z) in enumerate(zip(a, b, scores))]
        if split == "test":
            files[f"STS-B/{split}.tsv"] = tsv([r[:9] for r in rows], header[:9])
            expected["STS-B", split] = [(tok(x), tok(y)) for x, y in zip(a, b)]
        else:
            files[f"STS-B/{split}.tsv"] = tsv(rows, header)
            expected["STS-B", split] = [(tok(x), tok(y), z) for x, y, z in zip(a, b, scores)]
    # QNLI, RTE, WNLI: index, sentence1, sentence2, label (not in test)
    for task, labels in (("QNLI", ("entailment", "not_entailment")), ("RTE", ("entailment", "not_entailment")),
                         ("WNLI", (1, 0))):
        for split in SPLITS:
            a, b = take(2), take(2)
            if split == "test":
                files[f"{task}/{split}.tsv"] = tsv([(i, x, y) for i, (x, y) in enumerate(zip(a, b))],
                                                   ("index", "s1", "s2"))
                expected[task, split] = [(tok(x), tok(y)) for x, y in zip(a, b)]
            else:
                files[f"{task}/{split}.tsv"] = tsv([(i, x, y, z) for i, (x, y, z) in enumerate(zip(a, b, labels))],
                                                   ("index", "s1", "s2", "label"))
                expected[task, split] = [(tok(x), tok(y), str(z)) for x, y, z in zip(a, b, labels)]
    # MNLI: train 12 columns (gold_label last), dev 16 (label1..5 then gold_label), test 10
    parses = ("( a )", "( b )", "(ROOT a)", "(ROOT b)")
    gold = ["neutral", "entailment", "contradiction"]
    for name, task, split in (("train", "MNLI-m", "train"), ("dev_matched", "MNLI-m", "dev"),
                              ("test_matched", "MNLI-m", "test"), ("dev_mismatched", "MNLI-mm", "dev"),
                              ("test_mismatched", "MNLI-mm", "test")):
        a, b = take(3), take(3)
        head = [(i, 100 + i, f"{i}n", "fiction", *parses, x, y) for i, (x, y) in enumerate(zip(a, b))]
        if split == "test":
            files[f"MNLI/{name}.tsv"] = tsv(head, tuple(f"c{i}" for i in range(10)))
            expected[task, split] = [(tok(x), tok(y)) for x, y in zip(a, b)]
        else:
            if split == "train":
                rows = [(*h, g, g) for h, g in zip(head, gold)]
            else:  # label2 differs from gold_label: the original took column 12 (label2) for dev
                rows = [(*h, g, "neutral" if g != "neutral" else "entailment", g, g, g, g) for h, g in zip(head, gold)]
            files[f"MNLI/{name}.tsv"] = tsv(rows, tuple(f"c{i}" for i in range(len(rows[0]))))
            expected[task, split] = [(tok(x), tok(y), g) for x, y, g in zip(a, b, gold)]
    expected["MNLI-mm", "train"] = expected["MNLI-m", "train"]
    archives = {"CoLA": "CoLA.zip", "SST-2": "SST-2.zip", "QQP": "QQP-clean.zip", "STS-B": "STS-B.zip",
                "QNLI": "QNLIv2.zip", "RTE": "RTE.zip", "WNLI": "WNLI.zip", "MNLI": "MNLI.zip"}
    for top, archive in archives.items():
        with zipfile.ZipFile(folder / archive, "w", zipfile.ZIP_DEFLATED) as z:
            for name, text in files.items():
                if name.startswith(top + "/"):
                    z.writestr(name, text)
            z.writestr(f"__MACOSX/{top}/._train.tsv", "junk")
    # MRPC: BOM, CRLF, labels in column 1; dev = the train pairs of mrpc_dev_ids.tsv; test keeps its labels
    header = ("\ufeffQuality", "#1 ID", "#2 ID", "#1 String", "#2 String")
    a, b = take(5), take(5)
    quality = [1, 1, 0, 0, 1]
    rows = [(quality[i], 1000 + i, 2000 + i, x, y) for i, (x, y) in enumerate(zip(a, b))]
    (folder / "msr_paraphrase_train.txt").write_bytes(tsv(rows, header).replace("\n", "\r\n").encode("utf-8"))
    (folder / "mrpc_dev_ids.tsv").write_text("1001\t2001\n1003\t2003\n", encoding="utf-8")
    expected["MRPC", "train"] = [(tok(a[i]), tok(b[i]), str(quality[i])) for i in (0, 2, 4)]
    expected["MRPC", "dev"] = [(tok(a[i]), tok(b[i]), str(quality[i])) for i in (1, 3)]
    a, b = take(2), take(2)
    (folder / "msr_paraphrase_test.txt").write_text(tsv([(1, 1, 2, a[0], b[0]), (0, 3, 4, a[1], b[1])], header),
                                                    encoding="utf-8")
    expected["MRPC", "test"] = [(tok(a[0]), tok(b[0]), "1"), (tok(a[1]), tok(b[1]), "0")]
    return expected


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mirror")
    return folder, build_mirror(folder)


@pytest.fixture(scope="module")
def codes_vocab(tmp_path_factory):
    """300 BPE codes and their vocabulary, learned on the tokenized sample sentences."""
    folder = tmp_path_factory.mktemp("bpe")
    (folder / "text").write_text("".join(tok(s) + "\n" for s in SENTENCES), encoding="utf-8")
    codes, vocab = folder / "codes", folder / "vocab"
    with open(codes, "w", encoding="utf-8") as f:
        bpe.write_codes(bpe.learn_bpe([str(folder / "text")], 300), f)
    bpe.apply_bpe_file(str(folder / "text"), str(folder / "text.bpe"), str(codes))
    with open(vocab, "w", encoding="utf-8") as f:
        bpe.write_vocab(bpe.get_vocab([str(folder / "text.bpe")]), f)
    return codes, vocab


def get_data(folder, data, *args, check=True):
    return run(["bash", str(ROOT / "get-data-glue.sh"), "--mirror", str(folder), "--data_path", str(data), *args],
               check=check)


def prepare(codes, vocab, data, *args, check=True):
    return run(["bash", str(ROOT / "prepare-glue.sh"), "--codes", str(codes), "--vocab", str(vocab),
                "--input", str(data / "glue"), "--output", str(data / "eval"), *args], check=check)


def read_rows(path):
    return [tuple(line.split("\t")) for line in path.read_text(encoding="utf-8").splitlines()]


def test_offline_run_writes_what_glue_xnli_reads(mirror, codes_vocab, tmp_path):
    folder, expected = mirror
    data = tmp_path / "data"
    get_data(folder, data)
    glue = data / "glue"
    for (task, split), rows in expected.items():
        assert read_rows(glue / task / f"{split}.xlm.tsv") == rows, (task, split)
    assert (glue / "MNLI-mm" / "train.xlm.tsv").is_symlink()
    assert not list(glue.glob("*.zip")) and not list(glue.glob(".tmp*"))

    codes, vocab = codes_vocab
    tasks = ["SST-2", "MNLI-mm", "MRPC"]
    prepare(codes, vocab, data, "--tasks", ",".join(tasks))
    dico = Dictionary.read_vocab(str(vocab))
    for task in tasks:
        out = data / "eval" / task
        names = set(os.listdir(out))
        for split, name in (("train", "train"), ("dev", "valid"), ("test", "test")):
            rows = expected[task, split]
            has_label = len(rows[0]) == (2 if task == "SST-2" else 3)
            assert (f"{name}.label" in names) == has_label and (task == "MRPC" or split != "test" or not has_label)
            if has_label:
                assert (out / f"{name}.label").read_text(encoding="utf-8").splitlines() == [r[-1] for r in rows]
            for k, s in enumerate(["s1"] if task == "SST-2" else ["s1", "s2"]):
                text = (out / f"{name}.{s}").read_text(encoding="utf-8").splitlines()
                # (SST-2's lines keep the original's trailing space)
                assert [bpe.remove_bpe(line).split() for line in text] == [r[k].split() for r in rows], \
                    (task, split, s)
                corpus = load_binarized(str(out / f"{name}.{s}.pth"))
                assert len(corpus) == len(rows) and corpus.dico == dico
        assert not any(n.startswith("dev.") or n.startswith(".tmp") for n in names)
        assert ("valid.s2.pth" in names) == (task != "SST-2")

    # glue-xnli.py's reader takes them: label ids in the sorted order of the train labels, MRPC's test labelled
    reader = TaskData(str(data), dico)
    for task in tasks:
        train, label_set = reader.split(task, "train")
        for split, name in (("train", "train"), ("dev", "valid"), ("test", "test")):
            labelled, _ = reader.split(task, name, label_set=label_set)
            labels = None if labelled.labels is None else [label_set[i] for i in labelled.labels]
            assert labels == ([r[-1] for r in expected[task, split]] if split != "test" or task == "MRPC" else None)

    # a second run finds every output and redoes nothing
    outputs = [p for p in list(glue.rglob("*.xlm.tsv")) + list((data / "eval").rglob("*")) if p.is_file()]
    before = {p: p.stat().st_mtime_ns for p in outputs}
    assert "skipped" in get_data(folder, data).stdout
    assert "skipped" in prepare(codes, vocab, data, "--tasks", ",".join(tasks)).stdout
    assert before == {p: p.stat().st_mtime_ns for p in outputs}


def test_errors(mirror, codes_vocab, tmp_path):
    folder, _ = mirror
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "RTE.zip").write_bytes((folder / "RTE.zip").read_bytes()[:200])
    data = tmp_path / "data"
    proc = get_data(broken, data, "--tasks", "RTE", check=False)
    assert proc.returncode != 0 and proc.stderr.strip() == f"error: get-data-glue.sh: {broken}/RTE.zip: corrupt archive"
    assert [p.name for p in (data / "glue").iterdir()] == []

    proc = get_data(folder, data, "--tasks", "RTE,AX", check=False)
    assert proc.returncode != 0 and "--tasks: 'AX' is not a GLUE task" in proc.stderr

    codes, vocab = codes_vocab
    for args, message in (
            (["--codes", str(tmp_path / "missing")], f"error: prepare-glue.sh: BPE codes {tmp_path}/missing not found"),
            (["--tasks", "RTE"], f"error: prepare-glue.sh: {data}/glue/RTE/train.xlm.tsv not found"),
            (["--tasks", "SST-2,CoLA,SST-2"], "error: prepare-glue.sh: --tasks: 'SST-2' given twice")):
        proc = prepare(codes, vocab, data, *args, check=False)
        assert proc.returncode != 0 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert proc.stderr.startswith(message), proc.stderr
        assert not (data / "eval").exists()

    # a line of another shape stops the script with its place, before anything is written
    sst = data / "glue" / "SST-2"
    sst.mkdir(parents=True)
    for split in ("train", "dev", "test"):
        (sst / f"{split}.xlm.tsv").write_text("a good film .\t1\nnot good .\t0\n", encoding="utf-8")
    (sst / "dev.xlm.tsv").write_text("a good film .\t1\nnot\tgood .\t0\n", encoding="utf-8")
    proc = prepare(codes, vocab, data, "--tasks", "SST-2", check=False)
    assert proc.returncode != 0, proc.stdout
    assert proc.stderr.strip() == (f"error: prepare-glue.sh: {sst}/dev.xlm.tsv:2: expected 1 or 2 tab-separated "
                                   "columns, like every line of the file")
    assert [p.name for p in (data / "eval").iterdir()] == []


def test_truncated_mrpc_file_is_named_and_not_kept(mirror, tmp_path):
    """A fetched file that fails its check: the error names it as in the mirror with its line, the copy is not
    kept, and a rerun against a good mirror succeeds."""
    folder, expected = mirror
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("msr_paraphrase_train.txt", "msr_paraphrase_test.txt", "mrpc_dev_ids.tsv"):
        (broken / name).write_bytes((folder / name).read_bytes())
    lines = (folder / "msr_paraphrase_train.txt").read_bytes().split(b"\r\n")
    (broken / "msr_paraphrase_train.txt").write_bytes(b"\r\n".join(lines[:2] + [lines[2][:8]]))  # cut in line 3
    data = tmp_path / "data"
    proc = get_data(broken, data, "--tasks", "MRPC", check=False)
    assert proc.returncode != 0
    assert proc.stderr.strip() == \
        f"error: get-data-glue.sh: {broken}/msr_paraphrase_train.txt:3: fewer than 5 tab-separated columns", proc.stderr
    assert [p.name for p in (data / "glue" / "MRPC").iterdir()] == []
    get_data(folder, data, "--tasks", "MRPC")
    assert read_rows(data / "glue" / "MRPC" / "train.xlm.tsv") == expected["MRPC", "train"]


def test_arguments(tmp_path):
    not_a_folder = tmp_path / "mk.py"
    not_a_folder.write_text("x\n")
    for args, message in (
            (["--mirror", str(not_a_folder)],
             f"--mirror: '{not_a_folder}' is neither an existing folder nor an http(s):// or file:// URL"),
            (["--mirror", "no/such/folder"], "--mirror: 'no/such/folder' is neither an existing folder nor an "
                                             "http(s):// or file:// URL"),
            (["--tasks"], "--tasks: missing value"), (["--bogus", "1"], "unknown argument --bogus")):
        proc = run(["bash", str(ROOT / "get-data-glue.sh"), "--data_path", str(tmp_path / "data"), *args],
                   check=False)
        assert proc.returncode != 0, (args, proc.stderr)
        assert proc.stderr.strip() == f"error: get-data-glue.sh: {message}", (args, proc.stderr)
        assert not (tmp_path / "data").exists()
    proc = run(["bash", str(ROOT / "prepare-glue.sh"), "--bogus"], check=False, cwd=tmp_path)
    assert proc.returncode != 0 and proc.stderr.strip() == "error: prepare-glue.sh: unknown argument --bogus"


def test_labels_are_read_as_the_original_reads_them(tmp_path):
    """Trailing spaces and tabs are dropped; QQP's rows without a label (prepare-glue.sh writes them from rows
    of QQP's TSV with an empty last column) are the first class; elsewhere an empty label stays an error."""
    from xlm.evaluation.classification import XNLI_LABELS, read_labels
    path = tmp_path / "train.label"
    path.write_text("1\n0 \n\n1\t\n")
    labels, label_set = read_labels(path, "QQP")
    assert label_set == ("0", "1") and labels.tolist() == [1, 0, 0, 1]
    path.write_text("entailment \nnot_entailment\n")
    assert read_labels(path, "RTE")[0].tolist() == [0, 1]
    path.write_text("neutral \nentailment\t\n")
    assert read_labels(path, "XNLI")[0].tolist() == [XNLI_LABELS.index("neutral"), XNLI_LABELS.index("entailment")]
    path.write_text("1\n\n0\n")
    with pytest.raises(DataError, match=r"line 3: unknown label '0' \(SST-2 has 2 classes, and the labels before "
                                        r"it are '', '1'\)"):
        read_labels(path, "SST-2")
    path.write_text("0.5\n4.25\n0\n5\n")
    assert read_labels(path, "STS-B")[0].tolist() == [0.5, 4.25, 0, 5]
    # nan or inf would make every loss nan, silently; the original asserts the range
    for bad in ("nan", "1e999", "abc", "5.5", "-0.1"):
        path.write_text(f"0.5\n{bad}\n")
        with pytest.raises(DataError, match=f"train.label:2: STS-B labels are similarity scores from 0 to 5, "
                                            f"got '{bad}'"):
            read_labels(path, "STS-B")
