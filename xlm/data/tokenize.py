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
import sys
import unicodedata
from functools import lru_cache
from multiprocessing import Pool

from sacremoses import MosesPunctNormalizer, MosesTokenizer
from sacremoses.corpus import NonbreakingPrefixes

from ..fileio import DataError, iter_stdin_blocks

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
        return lambda s: word_tokenize(s, keep_whitespace=False)
    tagger = lib.Tagger()
    return lambda s: [w.surface for w in tagger(s)]


@lru_cache(maxsize=None)
def _normalizer(lang):
    return MosesPunctNormalizer(lang=lang, pre_replace_unicode_punct=True, post_remove_control_chars=True)


class MosesTokenizerFinalDot(MosesTokenizer):
    """sacremoses with Moses's rule since 2018-11 (tokenizer.perl, 9fc964da7 "split final dots
    unconditionally"), which the original's tools/tokenize.sh runs from a Moses checkout: the period of
    the last word is split off even after a nonbreaking prefix or a word with dots ("etc." -> "etc .",
    "crt0.o." -> "crt0.o ."). sacremoses 0.2 keeps the older rule."""

    def handles_nonbreaking_prefixes(self, text):
        tokens = super().handles_nonbreaking_prefixes(text).split()
        if tokens and len(tokens[-1]) > 1 and tokens[-1].endswith("."):
            tokens[-1] = tokens[-1][:-1] + " ."
        return " ".join(tokens)


@lru_cache(maxsize=None)
def _tokenizer(lang):
    return MosesTokenizerFinalDot(lang=lang)


def tokenize(line, lang):
    """Tokenize one line (no trailing newline) of language `lang`."""
    if lang == "zh":
        # Chinese is segmented first, then normalized, and never goes through the Moses tokenizer.
        line = " ".join(w for w in _segmenter(lang)(line) if w.strip())
        return " ".join(_normalizer(lang).normalize(line).split())
    line = _normalizer(lang).normalize(line)
    if lang in SEGMENTERS:
        return " ".join(w for w in _segmenter(lang)(line) if w.strip())
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
        blocks = ((block, args.lang) for _, block in iter_stdin_blocks(2000))
        out = sys.stdout
        if args.threads > 1:
            with Pool(args.threads) as pool:
                for result in pool.imap(_tokenize_block, blocks):
                    out.write("".join(s + "\n" for s in result))
        else:
            for block in blocks:
                out.write("".join(s + "\n" for s in _tokenize_block(block)))
    except DataError as e:
        sys.exit(f"error: {e}")


if __name__ == "__main__":
    main()
