"""Moses-style tokenization as the original tools/tokenize.sh does it, on sacremoses.

For every language but zh/th/ja: replace unicode punctuation, normalize punctuation for the language,
remove non-printing characters, then the Moses tokenizer without XML escaping. Chinese, Thai and
Japanese are segmented by an optional word segmenter instead of the Moses tokenizer.

Command line (stdin to stdout, all cores): python -m xlm.data.tokenize LANG
LANG is lower-cased (EN tokenizes as en). A language Moses has no nonbreaking prefixes for gets one
warning, and then, as in Moses's tokenizer.perl, the generic rules and the English prefixes.
"""
import argparse
import os
import re
import sys
import unicodedata
from functools import lru_cache
from multiprocessing import Pool

import regex
from sacremoses import MosesPunctNormalizer, MosesTokenizer
from sacremoses.corpus import NonbreakingPrefixes

from ..fileio import DataError, iter_stdin_blocks, writing_stdout

# language -> (segmenter module, pip extra that installs it)
SEGMENTERS = {"zh": ("jieba", "zh"), "th": ("pythainlp", "th"), "ja": ("fugashi", "ja")}


def _import_segmenter(lang):
    module, extra = SEGMENTERS[lang]
    try:
        return __import__(module)
    except ImportError:
        raise DataError(f"tokenizing '{lang}' needs the {module} word segmenter: pip install 'xlm[{extra}]'") from None


@lru_cache(maxsize=None)
def _segmenter(lang):
    """A function str -> list of words for zh/th/ja."""
    lib = _import_segmenter(lang)
    if lang == "zh":
        return lambda s: list(lib.cut(s))
    if lang == "th":
        from pythainlp.tokenize import word_tokenize
        return word_tokenize
    tagger = lib.Tagger()
    return lambda s: [w.surface for w in tagger(s)]


NON_PRINTING = regex.compile(r"\p{C}")


def _rule(pattern, replacement):
    """(compiled pattern, replacement, the text it matches when it is a plain string, else None)."""
    plain = not any(c in ".^$*+?{}[]\\|()" for c in pattern)
    return re.compile(pattern), replacement, pattern if plain else None


def _apply(rules, text):
    for pattern, replacement, plain in rules:
        if plain is None or plain in text:
            text = pattern.sub(replacement, text)
    return text


class PerlPunctNormalizer(MosesPunctNormalizer):
    """sacremoses's normalize-punctuation.perl, made to give the Perl script's output where it differs:
    - a comma or periods before a closing quote go after it in every language but English (which moves
      them before) and Czech; sacremoses moves them only in German, Spanish and French;
    - the Perl script matches each line with its newline, so that periods before a quote that ends the
      line move too ('dit."' -> 'dit".');
    - remove-non-printing-char.perl turns control and format characters (tabs, zero-width spaces and
      joiners) into spaces, where sacremoses deletes them and so joins the words around them;
    - nothing is trimmed, so that a line of spaces stays one for tokenizer.perl."""

    def __init__(self, lang):
        super().__init__(lang=lang)
        if lang not in ("en", "de", "es", "fr", "cs", "cz"):
            numbers = len(self.OTHER)  # the number rule stays last, as in the Perl script
            self.substitutions[-numbers:-numbers] = self.DE_ES_FR_QUOTATION_FOLLOWED_BY_COMMA
        # the same rules (about 80) in the same order, compiled once (`re.sub` on a pattern string looks it
        # up in re's cache at each call), and a pattern without metacharacters (most of them) tried only
        # when its text is in the line: the rules took 3/4 of the tokenizer's time
        self.unicode_rules = [_rule(p, r) for p, r in self.REPLACE_UNICODE_PUNCTUATION]
        self.rules = [_rule(p, r) for p, r in self.substitutions]

    def normalize(self, text):
        """The line as the three Perl scripts leave it, spaces included: tokenizer.perl prints a line of
        whitespace as it is, and trims the others itself."""
        text = _apply(self.unicode_rules, text)
        return NON_PRINTING.sub(" ", _apply(self.rules, text + "\n")[:-1])


@lru_cache(maxsize=None)
def _normalizer(lang):
    return PerlPunctNormalizer(lang)


DIGITS = set("0123456789")  # what starts a number for a numeric-only prefix (re's [0-9])

# Perl's Unicode properties, as tokenizer.perl matches them (\p{IsAlnum} is Alphabetic + decimal digits)
ALNUM, ALPHA, NUM, LOWER = r"\p{Alphabetic}\p{Nd}", r"\p{Alphabetic}", r"\p{N}", r"\p{Lowercase}"
ANY_LETTER, ALL_LOWER = regex.compile(rf"[{ALPHA}]"), regex.compile(rf"[{LOWER}]*")


def _apostrophe_rules(before_a_letter, between_letters):
    """tokenizer.perl's apostrophe rules: ' is split off between non-letters, before a letter after a
    character outside the class `before_a_letter`, after a letter before a non-letter, and between
    letters by the replacement `between_letters` (English it 's, French l' homme)."""
    return [(regex.compile(rf"([^{ALPHA}])[']([^{ALPHA}])"), r"\1 ' \2"),
            (regex.compile(rf"([^{before_a_letter}])[']([{ALPHA}])"), r"\1 ' \2"),
            (regex.compile(rf"([{ALPHA}])[']([^{ALPHA}])"), r"\1 ' \2"),
            (regex.compile(rf"([{ALPHA}])[']([{ALPHA}])"), between_letters)]


class _InTurn:
    """Rules applied one after the other where sacremoses applies one (pattern, replacement) pair:
    `_InTurn(rules), None` stands in for such a pair."""

    def __init__(self, rules):
        self.rules = rules

    def sub(self, _replacement, text):
        for pattern, replacement in self.rules:
            text = pattern.sub(replacement, text)
        return text


def _inside_words(chars):
    """tokenizer.perl's special characters for a language where `chars` may stand inside a word: they
    stay, unless a lower-case letter does not follow (Finnish USA:n, Catalan il·lusió)."""
    return [(regex.compile(rf"([^{ALNUM}\s\.'\`\,\-{regex.escape(chars)}])"), r" \1 "),
            (regex.compile(rf"({regex.escape(chars)})(?=$|[^\p{{Ll}}])"), r" \1 ")]


# tokenizer.perl's language rules that sacremoses leaves out. Its source has no `use utf8`, so its
# Catalan middle dot is read as the two characters "Â·": the dot stays inside words, and is split off
# only after an Â.
INSIDE_WORDS = {"fi": ":", "sv": ":", "tdt": "'", "ca": "\u00c2\u00b7"}
SPLIT_LEFT = ("ga", "ca")  # l' homme, as French and Italian
KEEP_GLOTTALS = ("so", "tdt")  # an apostrophe between letters stays

# Moses's nonbreaking prefix files as tokenizer.perl reads them, where sacremoses reads them otherwise.
# Perl does not trim a line, so these prefixes, written with a trailing space, never match:
UNMATCHED_PREFIXES = {"as": {"ভি"}, "bn": {"ভি"}, "mni": {"ভি"}, "ml": {"പി"}, "es": {"Fil", "gr", "pÃ¡g"},
                      "it": {"all", "es", "Amn", "Arch", "a.c"}, "nl": {"Nrs"}, "sk": {"Pf"}, "sv": {"Ö"}}
# and its last line for a prefix wins: Icelandic "no" is a plain prefix, not a numeric-only one; the
# Tetum numeric-only "Nu" is missing from sacremoses's copy.
NUMERIC_ONLY_TOGGLED = {"is": {"no"}, "tdt": {"Nu"}}


class PerlMosesTokenizer(MosesTokenizer):
    """sacremoses's port of Moses's tokenizer.perl, made to give the Perl script's output (which the
    original's tools/tokenize.sh runs from a Moses checkout) where the port differs:
    - character classes: Perl's Unicode properties instead of sacremoses's tables, which lack the CJK
      ideographs and Hangul (sacremoses splits 日本語 into 日 本 語; Perl keeps it) and count Indic viramas
      and nuktas as letters (Perl splits नमस्ते into नमस ् ते, and so does the original's tokenize.sh);
    - the period of the last word is split off whatever the word ("etc." -> "etc .", "crt0.o." ->
      "crt0.o ."), Moses's rule since 9fc964da7 (2018-11), which sacremoses 0.2 lacks;
    - the rules of fi, sv, ca, ga, so and tdt (INSIDE_WORDS, SPLIT_LEFT, KEEP_GLOTTALS), and the nonbreaking
      prefixes as Perl reads Moses's files (UNMATCHED_PREFIXES, NUMERIC_ONLY_TOGGLED)."""
    PAD_NOT_ISALNUM = regex.compile(rf"([^{ALNUM}\s\.'\`\,\-])"), r" \1 "
    COMMA_SEPARATE_1 = regex.compile(rf"([^{NUM}])[,]"), r"\1 , "
    COMMA_SEPARATE_2 = regex.compile(rf"[,]([^{NUM}])"), r" , \1"
    COMMA_SEPARATE_3 = regex.compile(rf"([{NUM}])[,]$"), r"\1 , "
    ENGLISH_SPECIFIC_APOSTROPHE = (_apostrophe_rules(ALPHA + NUM, r"\1 '\2")
                                   + [(regex.compile(rf"([{NUM}])[']([s])"), r"\1 '\2")])  # 1990 's
    FR_IT_SPECIFIC_APOSTROPHE = _apostrophe_rules(ALPHA, r"\1' \2")

    def __init__(self, lang):
        super().__init__(lang=lang)
        # sacremoses widens its own class on the instance for zh/ja/ko: Perl's holds every script already
        vars(self).pop("PAD_NOT_ISALNUM", None)
        self.NONBREAKING_PREFIXES = set(self.NONBREAKING_PREFIXES) - UNMATCHED_PREFIXES.get(lang, set())
        self.NUMERIC_ONLY_PREFIXES = set(self.NUMERIC_ONLY_PREFIXES) ^ NUMERIC_ONLY_TOGGLED.get(lang, set())
        if lang in INSIDE_WORDS:
            self.PAD_NOT_ISALNUM = _InTurn(_inside_words(INSIDE_WORDS[lang])), None
        if lang in SPLIT_LEFT:
            self.NON_SPECIFIC_APOSTROPHE = _InTurn(self.FR_IT_SPECIFIC_APOSTROPHE), None
        elif lang in KEEP_GLOTTALS:
            self.NON_SPECIFIC_APOSTROPHE = _InTurn(self.FR_IT_SPECIFIC_APOSTROPHE[:3]), None

    def isanyalpha(self, text):
        return ANY_LETTER.search(text) is not None

    def islower(self, text):
        return ALL_LOWER.fullmatch(text) is not None

    def handles_nonbreaking_prefixes(self, text):
        """tokenizer.perl's rule for a word that ends with a period: the period is split off unless the
        word is a nonbreaking prefix (or a numeric-only one before a number), holds another period and a
        letter, or the next word starts with a lower-case letter; then the last word's period is split off
        whatever the word. The rule is sacremoses's, written here to test only the words that end with a
        period: sacremoses matches a regular expression on every word, a sixth of the tokenizer's time."""
        tokens = text.split()
        for i, token in enumerate(tokens):
            if len(token) < 2 or token[-1] != ".":
                continue
            prefix, following = token[:-1], tokens[i + 1] if i + 1 < len(tokens) else ""
            if (("." in prefix and self.isanyalpha(prefix))
                    or (prefix in self.NONBREAKING_PREFIXES and prefix not in self.NUMERIC_ONLY_PREFIXES)
                    or (following and self.islower(following[0]))
                    or (prefix in self.NUMERIC_ONLY_PREFIXES and following[:1] in DIGITS)):
                continue
            tokens[i] = prefix + " ."
        text = " ".join(tokens)
        last = text.rpartition(" ")[2]
        return text[:-1] + " ." if len(last) > 1 and last.endswith(".") else text


@lru_cache(maxsize=None)
def _tokenizer(lang):
    return PerlMosesTokenizer(lang=lang)


def tokenize(line, lang):
    """Tokenize one line (no trailing newline) of language `lang` (its code in any case, as tools/tokenize.sh)."""
    lang = lang.lower()
    if lang == "zh":
        # Chinese is segmented first, then normalized, and never goes through the Moses tokenizer.
        line = " ".join(w for w in _segmenter(lang)(line) if w.strip())
        return " ".join(_normalizer(lang).normalize(line).split())
    line = _normalizer(lang).normalize(line)
    if lang in SEGMENTERS:
        words = _segmenter(lang)(line)
        # the original's segment_th.py joins PyThaiNLP's words as they come, its whitespace words included
        return " ".join(words if lang == "th" else [w for w in words if w.strip()])
    if line.isspace():
        return line  # tokenizer.perl prints a line of whitespace as it is
    return _tokenizer(lang).tokenize(line, escape=False, return_str=True)


def lowercase_and_remove_accent(line):
    """Lower-case, NFD-decompose and drop every combining mark (category Mn), as the original does.

    This also removes Arabic harakat and Indic/Thai vowel signs, and Hangul stays decomposed: the
    released XNLI-15 vocabularies were built this way, so it must not be 'fixed'.
    """
    line = unicodedata.normalize("NFD", line.rstrip().lower())
    return "".join(c for c in line if unicodedata.category(c) != "Mn").lower()


def check_language(lang):
    """Warn (once, on stderr) when Moses knows nothing of `lang`: no nonbreaking prefixes (sacremoses's
    list, the same languages as Moses's) and no word segmenter here."""
    if lang in SEGMENTERS or lang in set(NonbreakingPrefixes().available_langs.values()):
        return
    print(f"warning: Moses has no nonbreaking prefixes for language '{lang}' (unknown, or none in Moses): "
          "tokenizing with its generic rules and the English prefixes, as tokenizer.perl does", file=sys.stderr)


def _tokenize_block(args):
    lines, lang = args
    return [tokenize(line, lang) for line in lines]


def main(argv=None):
    parser = argparse.ArgumentParser(description="Moses tokenization (stdin to stdout) like XLM's tools/tokenize.sh")
    parser.add_argument("lang", type=str.lower, help="language code, e.g. en, fr, zh (lower-cased: EN is en)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="worker processes (default: all cores)")
    args = parser.parse_args(argv)
    try:
        if args.threads < 1:
            raise DataError(f"--threads must be at least 1, got {args.threads}")
        check_language(args.lang)
        if args.lang in SEGMENTERS:
            _import_segmenter(args.lang)
        blocks = ((block, args.lang) for _, block in iter_stdin_blocks(2000, desc=f"tokenize {args.lang}"))
        out = sys.stdout
        if args.threads > 1:
            # writing_stdout inside the pool: a closed pipe must end the process before the pool's shutdown
            with Pool(args.threads) as pool, writing_stdout():
                for result in pool.imap(_tokenize_block, blocks):
                    out.write("".join(s + "\n" for s in result))
        else:
            with writing_stdout():
                for block in blocks:
                    out.write("".join(s + "\n" for s in _tokenize_block(block)))
    except DataError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
