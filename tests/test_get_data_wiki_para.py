"""get-data-wiki.sh and get-data-para.sh offline, against mirror folders of tiny archives with the real names and
layouts (a bz2 MediaWiki XML export; OPUS moses zips with CORPUS.PAIR.LG inside; IITB's parallel.tgz), and their
split against the original's shell code run on the same file."""
import bz2
import io
import os
import random
import subprocess
import tarfile
import zipfile

import pytest

from conftest import ROOT, run
from xlm.data.tokenize import lowercase_and_remove_accent, tokenize

SEEDED_RANDOM = 'openssl enc -aes-256-ctr -pass pass:"42" -nosalt </dev/zero 2>/dev/null'


def original_split(path, n_valid, n_test):
    """The original XLM's split_data, with its 5000/5000 as parameters: (train, valid, test) as bytes."""
    n = sum(1 for _ in open(path, "rb"))
    shuffled = f"shuf --random-source=<({SEEDED_RANDOM}) {path}"
    cmds = [f"{shuffled} | head -{n - n_valid - n_test}", f"{shuffled} | head -{n - n_test} | tail -{n_valid}",
            f"{shuffled} | tail -{n_test}"]
    return [subprocess.run(["bash", "-c", c], capture_output=True, check=True).stdout for c in cmds]


def split_data(path, n_valid, n_test):
    run(["bash", "-c", f'set -euo pipefail; MAIN={ROOT}; source "$MAIN/tools/data_lib.sh"; '
         f'split_data {path} {path}.train {path}.valid {path}.test {n_valid} {n_test}'])
    return [open(f"{path}.{s}", "rb").read() for s in ("train", "valid", "test")]


def test_split_is_the_originals_byte_for_byte(tmp_path):
    rng = random.Random(0)
    words = ["a", "b\tc", "l'été", "x" * 50, "", "  ", "終わり"]
    path = tmp_path / "x.all"
    path.write_text("".join(" ".join(rng.choices(words, k=rng.randint(0, 6))) + "\n" for _ in range(12345)),
                    encoding="utf-8")
    ours = split_data(path, 5000, 5000)  # the original's sizes
    assert ours == original_split(path, 5000, 5000)
    assert [len(part.splitlines()) for part in ours] == [2345, 5000, 5000]
    assert sorted(b"".join(ours).splitlines()) == sorted(path.read_bytes().splitlines())
    small = tmp_path / "y.all"
    small.write_text("".join(f"line {i}\n" for i in range(40)))
    assert split_data(small, 3, 5) == original_split(small, 3, 5)


# ---------------------------------------------------------------------------------------------------- Wikipedia

PAGE = """  <page>
    <title>{title}</title>
    <ns>{ns}</ns>
    <id>{id}</id>{redirect}
    <revision>
      <id>{id}0</id>
      <timestamp>2024-01-01T00:00:00Z</timestamp>
      <model>wikitext</model>
      <format>text/x-wiki</format>
      <text bytes="{size}" xml:space="preserve">{text}</text>
      <sha1>abc</sha1>
    </revision>
  </page>
"""
SITEINFO = """<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" version="0.10" xml:lang="fr">
  <siteinfo>
    <sitename>Wikipédia</sitename>
    <dbname>frwiki</dbname>
    <base>https://fr.wikipedia.org/wiki/Wikip%C3%A9dia:Accueil_principal</base>
    <generator>MediaWiki 1.42.0-wmf.1</generator>
    <case>first-letter</case>
    <namespaces>
      <namespace key="0" case="first-letter" />
      <namespace key="10" case="first-letter">Modèle</namespace>
      <namespace key="14" case="first-letter">Catégorie</namespace>
    </namespaces>
  </siteinfo>
"""
# (title, namespace, redirect target, wikitext as it stands in the XML, i.e. with &lt; &gt; &amp; &quot;)
PAGES = [
    ("Modèle:Pays", 10, None, "la {{{1}}}"),
    ("Paris", 0, None, "{{Infobox Ville|nom=Paris|pays=France}}\n'''Paris''' est la capitale de {{Pays|France}}, "
     "sur la [[Seine (fleuve)|Seine]].\n\n== Histoire ==\nL'[[Île de la Cité]] était habitée dès l'Antiquité."
     "&lt;ref&gt;Une source.&lt;/ref&gt;\n\n[[Catégorie:Ville de France]]"),
    ("Capitale de la France", 0, "Paris", "#REDIRECTION [[Paris]]"),
    ("Catégorie:Ville de France", 14, None, "Les villes de [[France]]."),
    ("Lyon", 0, None, "'''Lyon''' est une ville ''française''.\n\nElle compte {{formatnum:500000}} habitants "
     "et deux fleuves : le Rhône et la Saône.\n\n* Fourvière\n* Croix-Rousse"),
]
# what WikiExtractor leaves of the two articles, empty lines and <doc> tags dropped (the titles stay, as in the
# original): templates expanded, links as their text, no references, categories, infoboxes or lists, italics quoted
ARTICLES = ["Paris", "Paris est la capitale de la France, sur la Seine.", "Histoire.",
            "L'Île de la Cité était habitée dès l'Antiquité.",
            "Lyon", 'Lyon est une ville "française".',
            "Elle compte 500,000 habitants et deux fleuves: le Rhône et la Saône."]
DUMP = "frwiki-latest-pages-articles.xml.bz2"


def wiki_dump():
    pages = "".join(PAGE.format(title=title, ns=ns, id=i + 1, size=len(text), text=text,
                                redirect=f'\n    <redirect title="{target}" />' if target else "")
                    for i, (title, ns, target, text) in enumerate(PAGES))
    return bz2.compress((SITEINFO + pages + "</mediawiki>\n").encode("utf-8"))


def get_data(script, arg, mirror, data, *extra, check=True):
    return run(["bash", str(ROOT / script), arg, "--mirror", str(mirror), "--data_path", str(data), *extra],
               check=check)


def test_wiki_offline(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / DUMP).write_bytes(wiki_dump())
    data = tmp_path / "data"
    get_data("get-data-wiki.sh", "fr", mirror, data, "--n_valid", "2", "--n_test", "3")
    txt = data / "wiki" / "txt"
    assert sorted(p.name for p in txt.iterdir()) == ["fr.all", "fr.test", "fr.train", "fr.valid"]
    assert (data / "wiki" / "bz2" / DUMP).read_bytes() == (mirror / DUMP).read_bytes()
    expected = [lowercase_and_remove_accent(tokenize(line, "fr")) for line in ARTICLES]
    assert (txt / "fr.all").read_text(encoding="utf-8").splitlines() == expected
    parts = [(txt / f"fr.{s}").read_bytes() for s in ("train", "valid", "test")]
    assert [len(p.splitlines()) for p in parts] == [2, 2, 3]
    assert parts == original_split(txt / "fr.all", 2, 3)

    # a rerun skips every step; a rerun of the split alone gives the same bytes
    before = {p.name: p.stat().st_mtime_ns for p in txt.iterdir()}
    proc = get_data("get-data-wiki.sh", "fr", mirror, data, "--n_valid", "2", "--n_test", "3")
    assert "fr.all exists, skipped" in proc.stdout and "exist, skipped" in proc.stdout
    assert before == {p.name: p.stat().st_mtime_ns for p in txt.iterdir()}
    (txt / "fr.valid").unlink()
    get_data("get-data-wiki.sh", "fr", mirror, data, "--n_valid", "2", "--n_test", "3")
    assert [(txt / f"fr.{s}").read_bytes() for s in ("train", "valid", "test")] == parts
    assert sorted(p.name for p in txt.iterdir()) == ["fr.all", "fr.test", "fr.train", "fr.valid"]


def test_wiki_corrupt_dump_is_a_clear_error(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / DUMP).write_bytes(wiki_dump()[:-40])
    data = tmp_path / "data"
    proc = get_data("get-data-wiki.sh", "fr", mirror, data, check=False)
    assert proc.returncode != 0
    assert proc.stderr.strip() == f"error: get-data-wiki.sh: {mirror / DUMP}: corrupt archive"
    assert not any(p.is_file() for p in (data / "wiki").rglob("*"))


# ---------------------------------------------------------------------------------------------------- parallel

def opus_zip(path, corpus, pair, texts):
    """An OPUS moses zip as OPUS serves it: CORPUS.PAIR.{L1,L2,ids}, README, LICENSE."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for lg, lines in texts.items():
            z.writestr(f"{corpus}.{pair}.{lg}", "".join(line + "\n" for line in lines))
        z.writestr(f"{corpus}.{pair}.ids", "a.xml\tb.xml\t1\t1\n")
        z.writestr("README", "OPUS corpus\n")
        z.writestr("LICENSE", "license\n")


def sentences(corpus, n):
    """n aligned sentence pairs that name their corpus and number, so that alignment can be checked."""
    return {"en": [f"The {corpus} sentence {i}, isn't it?" for i in range(n)],
            "tr": [f"{corpus} cümlesi {i}, değil mi?" for i in range(n)]}


# the original's en-tr corpora, named as OPUS names them now, with their sizes here
EN_TR = {"SETIMES": 9, "TED2013": 5, "Wikipedia": 6}


@pytest.fixture(scope="module")
def para_mirror(tmp_path_factory):
    folder = tmp_path_factory.mktemp("para_mirror")
    for corpus, n in EN_TR.items():
        opus_zip(folder / f"{corpus}.en-tr.txt.zip", corpus, "en-tr", sentences(corpus, n))
    return folder


def test_para_offline(para_mirror, tmp_path):
    data = tmp_path / "data"
    get_data("get-data-para.sh", "en-tr", para_mirror, data, "--n_valid", "3", "--n_test", "4")
    para = data / "para"
    for lg in ("en", "tr"):
        # the corpora in the order of the original's `cat data/para/*.en-tr.LG` (alphabetical)
        raw = [line for corpus in sorted(EN_TR) for line in sentences(corpus, EN_TR[corpus])[lg]]
        expected = [lowercase_and_remove_accent(tokenize(line, lg)) for line in raw]
        assert (para / f"en-tr.{lg}.all").read_text(encoding="utf-8").splitlines() == expected
        parts = [(para / f"en-tr.{lg}.{s}").read_bytes() for s in ("train", "valid", "test")]
        assert [len(p.splitlines()) for p in parts] == [13, 3, 4]
        assert parts == original_split(para / f"en-tr.{lg}.all", 3, 4)
    for split in ("train", "valid", "test"):  # both sides shuffled alike
        en, tr = ((para / f"en-tr.{lg}.{split}").read_text(encoding="utf-8").splitlines() for lg in ("en", "tr"))
        assert [(e.split()[1], e.split()[3]) for e in en] == [(t.split()[0], t.split()[2]) for t in tr]
    before = {p.name: p.stat().st_mtime_ns for p in para.iterdir()}
    proc = get_data("get-data-para.sh", "en-tr", para_mirror, data, "--n_valid", "3", "--n_test", "4")
    assert "all exist, skipped" in proc.stdout and "{train,valid,test} exist, skipped" in proc.stdout
    assert before == {p.name: p.stat().st_mtime_ns for p in para.iterdir()}


def test_para_iitb_tarball(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    texts = {"en": [f"Sentence {i}." for i in range(12)], "hi": [f"वाक्य {i} ।" for i in range(12)]}
    with tarfile.open(mirror / "IITB.en-hi.tgz", "w:gz") as tar:  # parallel/IITB.en-hi.{en,hi}, as IIT Bombay's
        for lg, lines in texts.items():
            blob = "".join(line + "\n" for line in lines).encode("utf-8")
            info = tarfile.TarInfo(f"parallel/IITB.en-hi.{lg}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    data = tmp_path / "data"
    get_data("get-data-para.sh", "en-hi", mirror, data, "--n_valid", "2", "--n_test", "2")
    for lg in ("en", "hi"):
        expected = [lowercase_and_remove_accent(tokenize(line, lg)) for line in texts[lg]]
        assert (data / "para" / f"en-hi.{lg}.all").read_text(encoding="utf-8").splitlines() == expected
        assert len((data / "para" / f"en-hi.{lg}.train").read_text(encoding="utf-8").splitlines()) == 8


def test_para_corrupt_or_wrong_archive_is_a_clear_error(para_mirror, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in para_mirror.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    bad = broken / "TED2013.en-tr.txt.zip"
    blob = bytearray(bad.read_bytes())
    blob[60:70] = b"0123456789"  # inside the first member's compressed data: its CRC check fails
    bad.write_bytes(bytes(blob))
    data = tmp_path / "data"
    proc = get_data("get-data-para.sh", "en-tr", broken, data, check=False)
    assert proc.returncode != 0 and proc.stderr.strip() == f"error: get-data-para.sh: {bad}: corrupt archive"
    # every archive is checked before any is unpacked
    assert sorted(p.name for p in (data / "para").iterdir()) == ["SETIMES.en-tr.txt.zip"]

    # a sound zip without the text of one language
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("TED2013.en-tr.en", "hello\n")
    proc = get_data("get-data-para.sh", "en-tr", broken, data, check=False)
    assert proc.returncode != 0
    assert f"{data / 'para' / 'TED2013.en-tr.txt.zip'}: 0 files named *.en-tr.tr inside, expected one" in proc.stderr
    assert not list((data / "para").glob("en-tr.*"))


def test_bad_arguments(tmp_path):
    for script, args, message in (("get-data-para.sh", ["xx-en"], "unsupported pair xx-en"),
                                  ("get-data-para.sh", [], "usage:"),
                                  ("get-data-wiki.sh", ["fr", "de"], "one language only"),
                                  ("get-data-wiki.sh", ["fr", "--n_valid", "many"],
                                   "--n_valid: expected a positive whole number, got 'many'"),
                                  ("get-data-wiki.sh", ["fr", "--n_test", "0"],
                                   "--n_test: expected a positive whole number, got '0'"),
                                  ("get-data-para.sh", ["en-tr", "--n_valid", "-5"],
                                   "--n_valid: expected a positive whole number, got '-5'"),
                                  ("get-data-wiki.sh", ["fr", "--mirror"], "--mirror: missing value"),
                                  ("get-data-wiki.sh", ["fr", "--bogus", "1"], "unknown argument --bogus"),
                                  ("get-data-wiki.sh", ["fr", "--mirror", "mk.py"],
                                   "--mirror: 'mk.py' is neither an existing folder nor an http(s):// or file:// URL"),
                                  ("get-data-para.sh", ["en-tr", "--mirror", "no/such/dir"],
                                   "--mirror: 'no/such/dir' is neither")):
        (tmp_path / "mk.py").write_text("x\n")
        proc = run(["bash", str(ROOT / script), *args], check=False, cwd=tmp_path)
        assert proc.returncode != 0 and message in proc.stderr, (script, args, proc.stderr)
        assert len(proc.stderr.splitlines()) == 1 and not (tmp_path / "data").exists(), (script, args, proc.stderr)


def test_wiki_dump_not_utf8_is_one_line(tmp_path):
    """A sound bz2 whose text is not UTF-8: one line naming the dump (not WikiExtractor's traceback), no
    temporary output left."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / DUMP).write_bytes(bz2.compress(b"\xa5\xff not text " * 50))
    data = tmp_path / "data"
    proc = get_data("get-data-wiki.sh", "fr", mirror, data, check=False)
    assert proc.returncode != 0 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    dump = data / "wiki" / "bz2" / DUMP
    assert proc.stderr.startswith(f"error: get-data-wiki.sh: {dump}: WikiExtractor failed ("), proc.stderr
    assert "remove it to fetch it again" in proc.stderr
    assert list((data / "wiki" / "txt").iterdir()) == []


def test_para_corpora_without_final_newline(tmp_path):
    """A corpus whose texts lack their final newline: its last line is not joined to the next corpus's first."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for corpus, n in EN_TR.items():
        with zipfile.ZipFile(mirror / f"{corpus}.en-tr.txt.zip", "w") as z:
            for lg, lines in sentences(corpus, n).items():
                z.writestr(f"{corpus}.en-tr.{lg}", "\n".join(lines))  # no final newline, on either side
    data = tmp_path / "data"
    get_data("get-data-para.sh", "en-tr", mirror, data, "--n_valid", "3", "--n_test", "4")
    for lg in ("en", "tr"):
        raw = [line for corpus in sorted(EN_TR) for line in sentences(corpus, EN_TR[corpus])[lg]]
        expected = [lowercase_and_remove_accent(tokenize(line, lg)) for line in raw]
        assert (data / "para" / f"en-tr.{lg}.all").read_text(encoding="utf-8").splitlines() == expected


def test_para_sides_of_unequal_length_are_one_error(para_mirror, tmp_path):
    """An archive whose two texts differ in length (one side's last line without newline counts as a line): one
    line naming the archive and both counts; the archive is not kept, nothing final-named is written, and a rerun
    with a good mirror succeeds."""
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in para_mirror.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    texts = sentences("TED2013", EN_TR["TED2013"])
    with zipfile.ZipFile(broken / "TED2013.en-tr.txt.zip", "w") as z:
        z.writestr("TED2013.en-tr.en", "\n".join(texts["en"]))  # 5 lines, the last without newline
        z.writestr("TED2013.en-tr.tr", "\n".join(texts["tr"][:4]) + "\n")  # 4 lines
    data = tmp_path / "data"
    proc = get_data("get-data-para.sh", "en-tr", broken, data, "--n_valid", "3", "--n_test", "4", check=False)
    archive = data / "para" / "TED2013.en-tr.txt.zip"
    assert proc.returncode != 0 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith(f"error: get-data-para.sh: {archive}: TED2013.en-tr.en has 5 lines but "
                                  "TED2013.en-tr.tr has 4 lines"), proc.stderr
    assert not archive.exists()
    assert not list((data / "para").glob("en-tr.*")) and not list((data / "para").glob("*.tmp"))
    get_data("get-data-para.sh", "en-tr", para_mirror, data, "--n_valid", "3", "--n_test", "4")
    assert len((data / "para" / "en-tr.tr.all").read_text(encoding="utf-8").splitlines()) == sum(EN_TR.values())


def test_a_failed_tokenization_leaves_no_temporary_file(tmp_path):
    """A corpus the tokenizer refuses (a bad UTF-8 byte) stops the script, with nothing beside the corpus."""
    corpus = tmp_path / "en-tr.tr.all.tmp"
    corpus.write_bytes(b"iyi g\xfcnler\n")
    proc = subprocess.run(["bash", "-c", f'set -euo pipefail; MAIN={ROOT}; source "$MAIN/tools/data_lib.sh"; '
                           f'tokenize_lower tr {corpus}'], capture_output=True, text=True)
    assert proc.returncode != 0 and "UTF-8" in proc.stderr
    assert os.listdir(tmp_path) == [corpus.name]
