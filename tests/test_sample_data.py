"""Checks of the shipped sample corpus (data/sample) and of its extractor.

The corpus is built by tools/extract_gettext.py from Debian's gettext
catalogs; see data/sample/README.md.
"""

import gettext
import io
import os
import struct

import pytest

from conftest import load_script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(ROOT, "data", "sample")
SPLITS = ("train", "valid", "test")
PAIRS = {"de-en": ("de", "en"), "en-fr": ("en", "fr")}
LANGS = ("en", "fr", "de")


extract_gettext = load_script(os.path.join(ROOT, "tools", "extract_gettext.py"))


def read_lines(relative_path):
    """Lines of a shipped file; fails on invalid UTF-8 (strict decoding)."""
    with open(os.path.join(SAMPLE, relative_path), "rb") as f:
        text = f.read().decode("utf-8")
    assert text.endswith("\n"), f"{relative_path}: missing final newline"
    assert "\r" not in text, f"{relative_path}: carriage return"
    return text[:-1].split("\n")


def para_files():
    return [f"para/{split}.{pair}.{lang}" for split in SPLITS for pair, langs in PAIRS.items() for lang in langs]


def mono_files():
    return [f"mono/{split}.{lang}" for split in SPLITS for lang in LANGS]


# ---------------------------------------------------------------------------
# The shipped files
# ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", para_files() + mono_files())
def test_file_is_clean_utf8_one_sentence_per_line(name):
    lines = read_lines(name)
    for number, line in enumerate(lines, 1):
        assert line, f"{name}:{number}: empty line"
        assert line == line.strip(), f"{name}:{number}: leading/trailing space"
        assert "\t" not in line and "  " not in line, f"{name}:{number}: unnormalised whitespace"


@pytest.mark.parametrize("pair", sorted(PAIRS))
@pytest.mark.parametrize("split", SPLITS)
def test_parallel_files_are_aligned_and_sized(pair, split):
    first, second = (read_lines(f"para/{split}.{pair}.{lang}") for lang in PAIRS[pair])
    assert len(first) == len(second)
    if split == "train":
        assert 10_000 <= len(first) <= 40_000
    else:
        assert 900 <= len(first) <= 1100
    # Pairs were deduplicated, and the two sides of a pair differ.
    pairs = list(zip(first, second))
    assert len(set(pairs)) == len(pairs)
    assert all(a != b for a, b in pairs)


@pytest.mark.parametrize("lang", LANGS)
def test_mono_sizes(lang):
    assert 10_000 <= len(read_lines(f"mono/train.{lang}")) <= 40_000
    for split in ("valid", "test"):
        assert 900 <= len(read_lines(f"mono/{split}.{lang}")) <= 1100


@pytest.mark.parametrize("lang", LANGS)
def test_held_out_sentences_are_never_trained_on(lang):
    # Any file of the language counts: para sides and mono alike.
    def sentences(split):
        found = set(read_lines(f"mono/{split}.{lang}"))
        for pair, langs in PAIRS.items():
            if lang in langs:
                found.update(read_lines(f"para/{split}.{pair}.{lang}"))
        return found

    train, valid, test = (sentences(split) for split in SPLITS)
    assert not train & valid
    assert not train & test
    assert not valid & test


def test_sample_folder_is_small():
    total = sum(os.path.getsize(os.path.join(folder, name))
                for folder, _dirs, names in os.walk(SAMPLE) for name in names)
    assert total < 12 * 1024 * 1024


# ---------------------------------------------------------------------------
# The extractor, on tiny catalogs built here
# ---------------------------------------------------------------------------

def make_mo(entries, charset="UTF-8"):
    """Bytes of a little-endian .mo file holding `entries` (msgid -> msgstr).

    Layout per the GNU gettext manual: 7-word header, table of original
    strings, table of translations (each N x (length, offset)), then the
    NUL-terminated strings. No hash table (its size is 0, which is allowed).
    """
    entries = dict(entries)
    entries[""] = f"Content-Type: text/plain; charset={charset}\n"
    keys = sorted(entries, key=lambda k: k.encode(charset))
    ids = [k.encode(charset) for k in keys]
    strs = [entries[k].encode(charset) for k in keys]
    count = len(keys)
    ids_offset = 28
    strs_offset = ids_offset + 8 * count
    data_offset = strs_offset + 8 * count
    tables, blob = [b"", b""], b""
    for t, strings in enumerate((ids, strs)):
        for s in strings:
            tables[t] += struct.pack("<2I", len(s), data_offset + len(blob))
            blob += s + b"\0"
    header = struct.pack("<7I", 0x950412DE, 0, count, ids_offset, strs_offset, 0, data_offset)
    return header + tables[0] + tables[1] + blob


GOOD = {
    "The file could not be opened.": "Le fichier n’a pas pu être ouvert.",
    "This message is wrapped\nover two lines.": "Ce message est coupé\nsur deux lignes.",
}
BAD = {
    # printf, positional printf, GCC, Python, str.format, shell, Qt
    "Cannot open %s for reading": "Impossible d’ouvrir %s en lecture",
    "Copied %1$s of %2$s files": "%1$s fichiers copiés sur %2$s",
    "declaration of %qD shadows a parameter": "la déclaration de %qD masque un paramètre",
    "Removed %(count)d old files": "%(count)d anciens fichiers supprimés",
    "Hello {name}, welcome back": "Bonjour {name}, bon retour",
    "Your home folder is $HOME today": "Votre dossier personnel est $HOME aujourd’hui",
    "Deleting %1 old files now": "Suppression de %1 anciens fichiers",
    # markup and entities
    "<b>Warning:</b> disk is full": "<b>Attention :</b> le disque est plein",
    "Tom &amp; Jerry are here": "Tom &amp; Jerry sont là",
    # accelerators
    "_Open the selected file": "_Ouvrir le fichier sélectionné",
    "&Save the current document": "&Enregistrer le document courant",
    # code-like syntax and --help option tables
    "choose one of yes|no|auto please": "choisissez parmi yes|no|auto SVP",
    "  -v, --verbose     explain what is being done\n": "  -v, --verbose     expliquer ce qui est fait\n",
    # too short (either side)
    "Open file": "Ouvrir le fichier",
    "Quit the program now": "Quitter",
    # context, plural, untranslated, identical
    "menu\x04Open the recent file": "Ouvrir le fichier récent",
    "One file was removed\x00Many files were removed": "Un fichier supprimé\x00Des fichiers supprimés",
    "Nothing was translated here": "",
    "GNU General Public License": "GNU General Public License",
    # invisible characters
    "Failed to select the mailbox": "\ufeffÉchec de la sélection de la boîte",
}


def test_make_mo_is_a_valid_catalog():
    # The stdlib parser reads what the test builder writes.
    catalog = gettext.GNUTranslations(io.BytesIO(make_mo(GOOD)))
    assert catalog.gettext("The file could not be opened.") == "Le fichier n’a pas pu être ouvert."


def test_cleaning_rules(tmp_path):
    path = tmp_path / "fr" / "LC_MESSAGES" / "demo.mo"
    path.parent.mkdir(parents=True)
    path.write_bytes(make_mo({**GOOD, **BAD}))
    assert len(extract_gettext.read_mo(str(path))) == len(GOOD) + len(BAD)
    assert extract_gettext.extract_pairs([str(path)]) == {
        ("The file could not be opened.", "Le fichier n’a pas pu être ouvert."),
        ("This message is wrapped over two lines.", "Ce message est coupé sur deux lignes."),
    }


def test_non_utf8_catalog_is_decoded(tmp_path):
    path = tmp_path / "latin1.mo"
    path.write_bytes(make_mo({"The operation was cancelled.": "Le opération a été annulée."}, charset="ISO-8859-1"))
    assert extract_gettext.read_mo(str(path)) == [("The operation was cancelled.", "Le opération a été annulée.")]


def test_locale_selection(tmp_path):
    accepted = {"fr": "fr", "fr_FR": "fr", "fr_FR.UTF-8": "fr", "de": "de", "de_DE": "de"}
    for name, lang in accepted.items():
        assert extract_gettext.locale_language(name, ["fr", "de"]) == lang
    for name in ("fr_CA", "de_CH", "de_AT", "frp", "de@hebrew", "en", "es"):
        assert extract_gettext.locale_language(name, ["fr", "de"]) is None

    # A bare "de" catalog wins over "de_DE" for the same domain; a domain that
    # only has "de_DE" is still used.
    mo = make_mo(GOOD)
    for locale, domain in (("de", "a"), ("de_DE", "a"), ("de_DE", "b"), ("de_AT", "c")):
        folder = tmp_path / "usr" / "share" / "locale" / locale / "LC_MESSAGES"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{domain}.mo").write_bytes(mo)
    found = extract_gettext.find_catalogs([str(tmp_path)], ["de"])["de"]
    assert [os.path.relpath(p, tmp_path / "usr" / "share" / "locale") for p in found] == [
        os.path.join("de", "LC_MESSAGES", "a.mo"),
        os.path.join("de_DE", "LC_MESSAGES", "b.mo"),
    ]


def test_end_to_end_split(tmp_path):
    # 60 English messages, translated in both languages; "Shared" French text
    # translates two English messages, which must then share a split.
    fr, de = {}, {}
    for i in range(60):
        english = f"Message number {i} was delivered"
        fr[english] = f"Le message numéro {i} a été livré"
        de[english] = f"Nachricht Nummer {i} wurde zugestellt"
    fr["Another way to say it"] = fr["Message number 0 was delivered"]
    for lang, entries in (("fr", fr), ("de", de)):
        folder = tmp_path / "catalogs" / lang / "LC_MESSAGES"
        folder.mkdir(parents=True)
        (folder / "demo.mo").write_bytes(make_mo(entries))

    out = tmp_path / "out"
    extract_gettext.main(["--langs", "fr,de", "--out", str(out), "--valid-size", "3",
                          "--test-size", "3", str(tmp_path / "catalogs")])

    def lines(name):
        return (out / name).read_text(encoding="utf-8").splitlines()

    english_split = {}
    for pair, langs in PAIRS.items():
        for split in SPLITS:
            first, second = (lines(f"para/{split}.{pair}.{lang}") for lang in langs)
            assert len(first) == len(second)
            assert len(first) <= 3 or split == "train"
            for english in lines(f"para/{split}.{pair}.en"):
                # The English side is split the same way in every pair.
                assert english_split.setdefault(english, split) == split
    for lang in LANGS:
        train, valid, test = (set(lines(f"mono/{split}.{lang}")) for split in SPLITS)
        assert train and valid and test
        assert not (train & valid or train & test or valid & test)
