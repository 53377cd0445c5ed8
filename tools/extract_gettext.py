#!/usr/bin/env python3
"""Build a small real parallel + monolingual corpus from gettext catalogs.

Free-software programs ship their user-interface messages translated by
volunteers as gettext catalogs (``.mo`` files). Each catalog maps an English
message (``msgid``) to its translation (``msgstr``), which makes a genuine,
freely licensed English-X parallel corpus. It is small and domain specific
(computer messages), but real human translations, which is what the sample
data of this project needs: something tiny enough to ship and to train on in
a test, yet realistic enough that tokenization, BPE and the data loaders see
real text.

Usage (the command that produced data/sample, see data/sample/README.md):

    bash tools/fetch_sample_catalogs.sh /tmp/catalogs
    python tools/extract_gettext.py --langs fr,de --out data/sample --seed 0 /tmp/catalogs/root

Pipeline: find catalogs -> read (msgid, msgstr) pairs -> clean -> deduplicate
-> split deterministically -> write files in XLM's naming scheme:

    OUT/para/{train,valid,test}.en-fr.{en,fr}    (pair names sorted: de-en, en-fr)
    OUT/mono/{train,valid,test}.{en,fr,de}

Only the standard library is used, so the script runs anywhere.
"""

import argparse
import hashlib
import os
import re
import struct
import sys
import unicodedata
from collections import defaultdict

SPLITS = ("train", "valid", "test")


# ---------------------------------------------------------------------------
# 1. Finding catalogs
# ---------------------------------------------------------------------------

def locale_language(locale_dir, langs):
    """Return the language code that a locale folder name stands for, or None.

    Accepted: the bare code ("fr") and its "main country" variant ("fr_FR",
    "de_DE", optionally with an encoding suffix such as ".UTF-8"). Regional
    variants (fr_CA, de_CH, de_AT) are rejected: they are mostly copies of the
    main catalog with a few spelling changes, so they would only add
    near-duplicate pairs. Modifiers (de@hebrew) are transliterations, not
    natural text, and are rejected too. Exact matching also keeps e.g. "frp"
    (Arpitan) from being taken for French.
    """
    name = locale_dir.split(".")[0]
    if "@" in name:
        return None
    if name in langs:
        return name
    lang, _, country = name.partition("_")
    if lang in langs and country == lang.upper():
        return lang
    return None


def find_catalogs(roots, langs):
    """Map each language to the sorted list of its .mo files under `roots`.

    A catalog lives at .../<locale>/LC_MESSAGES/<domain>.mo. When a domain has
    both a bare ("fr") and a main-country ("fr_FR") catalog, only the bare one
    is used, again to avoid near-duplicates.
    """
    found = defaultdict(dict)  # lang -> {(root, domain): (is_bare, path)}
    for root in roots:
        for dirpath, _dirnames, filenames in os.walk(root):
            if os.path.basename(dirpath) != "LC_MESSAGES":
                continue
            locale_dir = os.path.basename(os.path.dirname(dirpath))
            lang = locale_language(locale_dir, langs)
            if lang is None:
                continue
            is_bare = locale_dir.split(".")[0] == lang
            for filename in filenames:
                if not filename.endswith(".mo"):
                    continue
                # The same domain may sit in several packages (e.g. the
                # gnulib domains), so the key is the folder above the locale
                # tree plus the domain.
                locale_root = os.path.dirname(os.path.dirname(dirpath))
                key = (locale_root, filename)
                path = os.path.join(dirpath, filename)
                if key not in found[lang] or (is_bare and not found[lang][key][0]):
                    found[lang][key] = (is_bare, path)
    return {lang: sorted(path for _bare, path in found[lang].values()) for lang in langs}


# ---------------------------------------------------------------------------
# 2. Reading a .mo file
# ---------------------------------------------------------------------------

def read_mo(path):
    """Return the list of raw (msgid, msgstr) string pairs of a .mo file.

    A small struct-based reader is used rather than gettext.GNUTranslations
    because the latter hides what we need to see: it splits plural entries
    into numbered forms and loses msgid_plural. Here a plural entry keeps its
    NUL separator ("one\\0many") and a context keeps its EOT separator
    ("ctx\\x04msgid"), so the cleaning step can recognise and drop them.

    Format (GNU gettext manual, "The Format of GNU MO Files"): a header of
    32-bit integers (magic, revision, number of strings N, offset of the
    original-strings table, offset of the translations table, ...), then two
    tables of N (length, offset) pairs pointing at the strings.
    Fuzzy entries never reach a .mo file (msgfmt leaves them out unless asked
    with --use-fuzzy), so there is nothing to filter for them here.
    """
    with open(path, "rb") as f:
        data = f.read()
    magic = struct.unpack("<I", data[:4])[0]
    if magic == 0x950412DE:
        order = "<"
    elif magic == 0xDE120495:
        order = ">"
    else:
        raise ValueError(f"{path}: not a .mo file")
    _revision, count, ids_offset, strs_offset = struct.unpack(order + "4I", data[4:20])

    def string_at(table_offset, i):
        length, offset = struct.unpack(order + "2I", data[table_offset + 8 * i: table_offset + 8 * i + 8])
        return data[offset: offset + length]

    raw = [(string_at(ids_offset, i), string_at(strs_offset, i)) for i in range(count)]

    # The entry with an empty msgid is the header; its Content-Type line names
    # the encoding of every string in the catalog (nearly always UTF-8).
    charset = "utf-8"
    for msgid, msgstr in raw:
        if msgid == b"":
            match = re.search(rb"charset=([A-Za-z0-9_.:-]+)", msgstr)
            # "charset=CHARSET" is the unfilled placeholder of a .pot template.
            if match and match.group(1).lower() != b"charset":
                charset = match.group(1).decode("ascii")
    pairs = []
    for msgid, msgstr in raw:
        if msgid == b"":
            continue
        try:
            pairs.append((msgid.decode(charset), msgstr.decode(charset)))
        except (UnicodeDecodeError, LookupError):
            continue  # a broken entry or an unknown charset: skip it
    return pairs


# ---------------------------------------------------------------------------
# 3. Cleaning
# ---------------------------------------------------------------------------

# Messages are UI strings, not sentences: many are templates with
# placeholders, labels with keyboard accelerators, or markup. Those would
# teach a language model placeholder syntax rather than language, and their
# "translations" often reorder or rename placeholders, so such entries are
# dropped whole rather than repaired.
FORMAT_RE = re.compile(
    # printf %s %5.2f %1$s %% %@, GCC's %qD %<...%>, Python %(name)s
    r"%(\d+\$)?[-+#0'*.\d]*[A-Za-z%<>(@]"
    r"|%\d"            # Qt/KDE style: %1
    r"|[{}]"           # str.format and other brace templates: {name} {0} {}
    r"|\$(\{|\w)"      # shell: $VAR ${VAR} $1
    r"|@\w"            # e2fsprogs' abbreviations "@i" (inode), "@b" (block)...; e-mail addresses
)
# Characters that mark code or command-line syntax rather than prose:
# "--param=mode=[a|b]", "PATH|FILE", escaped "\n" in help texts.
CODE_RE = re.compile(r"[|\\=]")
MARKUP_RE = re.compile(
    r"<[A-Za-z/!?][^<>]*>"                     # tags: <b> </a> <br/>, also <file> placeholders
    r"|&(#\d+|#x[0-9A-Fa-f]+|[A-Za-z]\w*);"    # XML/HTML entities: &amp; &#160;
)
# Accelerator markers: an underscore, ampersand or tilde that introduces a
# letter ("_File", "&Open", "Sa_ve", "~Edit"). This also catches identifiers
# such as "file_name", which are not natural language either.
ACCELERATOR_RE = re.compile(r"[_&~]\w")
MIN_WORDS = 3


def normalize(text):
    """NFC-normalise and collapse every run of Unicode whitespace to one space.

    Newlines inside a message are line wrapping of a paragraph, so turning
    them into spaces keeps the text; tabs and non-breaking spaces (French
    typography puts one before ':' '?' '!') become plain spaces as well, so
    that the files contain one kind of space only.
    """
    return " ".join(unicodedata.normalize("NFC", text).split())


def is_clean(text):
    """True if one side of a pair is plain natural-language text."""
    if len(text.split()) < MIN_WORDS:
        return False
    if any(regex.search(text) for regex in (FORMAT_RE, CODE_RE, MARKUP_RE, ACCELERATOR_RE)):
        return False
    # Any remaining control or format character (zero-width spaces, bidi marks,
    # escape sequences) would be invisible trouble in a text file.
    return not any(unicodedata.category(ch) in ("Cc", "Cf") for ch in text)


def looks_like_layout(text):
    """True for column-formatted text, such as --help option tables.

    Runs of several spaces or tabs, or a line starting with indentation, mean
    the message is laid out for a terminal; joining its lines would produce a
    run-on sequence of fragments rather than a sentence.
    """
    return "\t" in text or re.search(r"\S {3,}\S|\n ", text) is not None


def clean_pair(msgid, msgstr):
    """Return the normalised (english, translation) pair, or None to drop it."""
    if not msgid or not msgstr:
        return None  # untranslated entry
    if "\x00" in msgid or "\x00" in msgstr:
        return None  # plural entry: its forms differ only in a number placeholder
    if "\x04" in msgid:
        return None  # entry with a msgctxt: mostly short, ambiguous UI labels
    if looks_like_layout(msgid.strip()) or looks_like_layout(msgstr.strip()):
        return None
    english, foreign = normalize(msgid), normalize(msgstr)
    if not (is_clean(english) and is_clean(foreign)):
        return None
    if english.casefold() == foreign.casefold():
        return None  # untranslated copy, product name, command line...
    return english, foreign


def extract_pairs(mo_paths):
    """Clean, deduplicated (english, translation) pairs of a list of catalogs."""
    pairs = set()
    for path in mo_paths:
        for msgid, msgstr in read_mo(path):
            pair = clean_pair(msgid, msgstr)
            if pair is not None:
                pairs.add(pair)
    return pairs


# ---------------------------------------------------------------------------
# 4. Deterministic split
# ---------------------------------------------------------------------------

def hash_key(text, seed):
    """A stable pseudo-random number for a sentence (same on every machine)."""
    return int.from_bytes(hashlib.sha256(f"{seed}\t{text}".encode("utf-8")).digest()[:8], "big")


def english_split(english, seed, heldout_fraction):
    """Split of an English sentence, decided by its hash alone.

    Because it depends on nothing but the sentence, the English side is split
    the same way in en-fr, de-en and the English monolingual data, so a
    sentence used for validation in one file is never trained on in another.
    """
    u = hash_key(english, seed) / 2**64
    if u < heldout_fraction:
        return "test"
    if u < 2 * heldout_fraction:
        return "valid"
    return "train"


def split_corpus(pairs_by_lang, seed, valid_size, test_size, max_train):
    """Assign splits to all pairs and monolingual sentences.

    Returns (para, mono): para[lang][split] is a list of (english, foreign)
    pairs, mono[lang][split] a list of sentences.

    - An English sentence's split comes from its hash (english_split).
    - A foreign sentence can translate several English messages ("File not
      found" / "File not found."); it takes the split of the first of them in
      hash order, and a pair is kept only if both sides agree, so that no
      sentence of any language is both held out and trained on.
    - The held-out fraction is chosen so that the smallest data set still has
      enough held-out candidates; each valid/test set then keeps its
      `valid_size`/`test_size` sentences of lowest hash and the surplus is
      discarded (moving it to train would break the guarantee above).
    """
    english_all = set(e for pairs in pairs_by_lang.values() for e, _f in pairs)
    smallest = min(len(set(e for e, _f in pairs)) for pairs in pairs_by_lang.values())
    # 25% headroom covers hash fluctuations and the pairs lost to disagreement.
    heldout_fraction = 1.25 * max(valid_size, test_size) / smallest
    if heldout_fraction >= 0.5:
        sys.exit(f"error: only {smallest} distinct English sentences, too few for the held-out sets")

    def split_of_english(e):
        return english_split(e, seed, heldout_fraction)

    def order(sentence):
        return hash_key(sentence, seed)

    limits = {"train": max_train, "valid": valid_size, "test": test_size}
    para, mono = {}, {}
    for lang, pairs in pairs_by_lang.items():
        # Each foreign sentence follows its English partner of lowest hash.
        first_partner = {}
        for e, f in sorted(pairs, key=lambda p: order(p[0])):
            first_partner.setdefault(f, e)
        split_of_foreign = {f: split_of_english(e) for f, e in first_partner.items()}

        para[lang] = {s: [] for s in SPLITS}
        for e, f in sorted(pairs, key=lambda p: (order(p[0]), p[1])):
            split = split_of_english(e)
            if split == split_of_foreign[f]:
                para[lang][split].append((e, f))
        mono[lang] = {s: [] for s in SPLITS}
        for f in sorted(split_of_foreign, key=order):
            mono[lang][split_of_foreign[f]].append(f)

    mono["en"] = {s: [] for s in SPLITS}
    for e in sorted(english_all, key=order):
        mono["en"][split_of_english(e)].append(e)

    # Lists are in hash order, so truncation keeps a random-looking sample.
    for data in list(para.values()) + list(mono.values()):
        for split in SPLITS:
            if limits[split] is not None:
                del data[split][limits[split]:]
    return para, mono


# ---------------------------------------------------------------------------
# 5. Output
# ---------------------------------------------------------------------------

def write_lines(path, lines):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for line in lines:
            f.write(line + "\n")


def write_corpus(out, para, mono):
    """Write the files and return a summary {file name: line count}."""
    os.makedirs(os.path.join(out, "para"), exist_ok=True)
    os.makedirs(os.path.join(out, "mono"), exist_ok=True)
    counts = {}
    for lang, splits in para.items():
        # XLM names a pair by its two languages in alphabetical order: de-en, en-fr.
        pair_name = "-".join(sorted(("en", lang)))
        for split, pairs in splits.items():
            for side, index in (("en", 0), (lang, 1)):
                name = f"para/{split}.{pair_name}.{side}"
                write_lines(os.path.join(out, name), [p[index] for p in pairs])
                counts[name] = len(pairs)
    for lang, splits in mono.items():
        for split, sentences in splits.items():
            name = f"mono/{split}.{lang}"
            write_lines(os.path.join(out, name), sentences)
            counts[name] = len(sentences)
    return counts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("roots", nargs="+", metavar="MO_ROOT", help="folders to search for */LC_MESSAGES/*.mo")
    parser.add_argument("--langs", default="fr,de", help="comma-separated target languages (English is the source)")
    parser.add_argument("--out", default="data/sample", help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split hash")
    parser.add_argument("--valid-size", type=int, default=1000)
    parser.add_argument("--test-size", type=int, default=1000)
    parser.add_argument("--max-train", type=int, default=25000, help="cap on train pairs / sentences per file")
    args = parser.parse_args(argv)

    langs = [lang.strip() for lang in args.langs.split(",") if lang.strip()]
    if "en" in langs:
        parser.error("English is the source side of every catalog; do not list it in --langs")
    for flag, value, least in (("--valid-size", args.valid_size, 0), ("--test-size", args.test_size, 0),
                               ("--max-train", args.max_train, 1)):
        if value < least:
            parser.error(f"{flag} {value}: must be >= {least}")
    existing = os.path.abspath(args.out)  # the output folder, or what of its path exists
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        parser.error(f"--out {args.out}: {existing} is not a folder")
    catalogs = find_catalogs(args.roots, langs)
    pairs_by_lang = {}
    for lang in langs:
        if not catalogs[lang]:
            sys.exit(f"error: no catalog for {lang!r} under {args.roots}")
        pairs_by_lang[lang] = extract_pairs(catalogs[lang])
        print(f"{lang}: {len(catalogs[lang])} catalogs, {len(pairs_by_lang[lang])} clean pairs")

    para, mono = split_corpus(pairs_by_lang, args.seed, args.valid_size, args.test_size, args.max_train)
    counts = write_corpus(args.out, para, mono)
    width = max(len(name) for name in counts)
    for name in sorted(counts):
        print(f"{name:<{width}}  {counts[name]:>6} lines")
    for name, count in counts.items():
        split = os.path.basename(name).split(".")[0]
        wanted = {"valid": args.valid_size, "test": args.test_size}.get(split)
        if wanted is not None and count < wanted:
            print(f"warning: {name} has {count} lines, fewer than the {wanted} asked for", file=sys.stderr)


if __name__ == "__main__":
    main()
