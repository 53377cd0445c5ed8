#!/usr/bin/env python
"""Masked-word prediction with an MLM checkpoint (xlm's or the original's): the model's top
predictions beside the truth.

    python tools/fill_mask.py MODEL.pth --codes CODES --lang en "Could not <mask> the file."
    python tools/fill_mask.py MODEL.pth --codes CODES --lang en --mask 2 "Could not open the file."
    python tools/fill_mask.py MODEL.pth --codes CODES --lang fr --mask 3 \\
        --translation "Could not open the file." --translation_lang en "Impossible d'ouvrir le fichier."

Sentences (arguments, or one per line on stdin) are Moses-tokenized for --lang, lower-cased and
accent-stripped with --lowercase (the XNLI-15 models), and BPE'd with --codes (and --vocab, as
fastBPE's applybpe); without --codes they are taken as they are (tokenized and BPE'd). A `<mask>` or
`[MASK]` is one masked token whose truth is unknown; --mask masks words by index among the words of
the tokenized sentence (0-based, negative from the end; `random` draws one per sentence with --seed),
every subword of a masked word. Masked tokens become the mask token (<special1>), all at once.

With --translation, the sentence is also scored with its translation beside it, as TLM is trained
(`xlm.objectives.lm.concat_pair`: `</s> a </s> </s> b </s>`, positions restarting at 0 on the second
side, each side with its language id, in the order of the run's TLM step), and both predictions are
printed: what the model takes from the other language shows as the difference. --translations FILE
gives one translation per sentence (line by line), and a last line sums up the known masked tokens
of all the sentences, alone and with the translation: how often the truth is the top prediction, and
the perplexity of the truths (exp of their mean negative log-probability); --summary prints only that
line. Language ids come from the checkpoint's params (`lang2id`), the vocabulary from the checkpoint.

    python tools/fill_mask.py MODEL.pth --codes CODES --lang fr --mask random --summary \
        --translations valid.en-fr.en --translation_lang en < valid.en-fr.fr
"""
import argparse
import io
import math
import os
import random
import re
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from xlm.data.datasets import batch_sentences  # noqa: E402
from xlm.data.dictionary import MASK_INDEX  # noqa: E402
from xlm.embed import SentenceEncoder  # noqa: E402
from xlm.fileio import DataError, check_streams, iter_stdin_blocks, read_lines  # noqa: E402
from xlm.objectives.lm import concat_pair  # noqa: E402
from tools.unigram_ppl import require_mlm_steps  # noqa: E402

MASK_MARKER = re.compile(r"<mask>|\[MASK\]")


def words_of(encoder, sentence, lang):
    """The sentence's words, each a list of its BPE subwords; a mask marker is the word [None]."""
    words = []
    for i, piece in enumerate(MASK_MARKER.split(sentence)):
        words += [[None]] if i else []
        word = []
        for token in encoder.preprocess(piece, lang).split():
            word.append(token)
            if not token.endswith("@@"):
                words.append(word)
                word = []
        words += [word] if word else []
    return words


def mask_words(words, indices):
    """(tokens, masked flags): the subwords of the words at `indices` (and of mask markers) flagged."""
    n = len(words)
    for i in indices:
        if not -n <= i < n:
            raise DataError(f"--mask {i}: the sentence has {n} words ({' '.join(''.join(w) for w in words if w[0])})")
    chosen = {i % n for i in indices} | {i for i, w in enumerate(words) if w == [None]}
    tokens = [t for w in words for t in w]
    return tokens, [i in chosen for i, w in enumerate(words) for _ in w]


def random_word(words, rng):
    """The index of one word with a letter or digit in it, drawn with rng (a random.Random)."""
    candidates = [i for i, w in enumerate(words) if w[0] is not None and any(c.isalnum() for c in "".join(w))]
    if not candidates:
        raise DataError(f"--mask random: no word to mask in '{' '.join(''.join(w) for w in words)}'")
    return rng.choice(candidates)


def model_input(ids, lang, context_ids=None, context_lang=None, context_first=True):
    """(x, lengths, positions, langs) of `</s> ids </s>`, or with context_ids of the TLM pair made by
    concat_pair with the context first or second; positions None means 0, 1, ...; lang None: no ids."""
    sentence = batch_sentences([np.asarray(ids, dtype=np.int64)])
    if context_ids is None:
        return sentence.x, sentence.lengths, None, None if lang is None else torch.full_like(sentence.x, lang)
    sides = [(batch_sentences([np.asarray(context_ids, dtype=np.int64)]), context_lang), (sentence, lang)]
    (b1, lang1), (b2, lang2) = sides if context_first else sides[::-1]
    return concat_pair(b1, lang1, b2, lang2)


@torch.no_grad()
def masked_log_probs(model, x, lengths, positions, langs):
    """(number of mask tokens in x, n_words) log-probabilities at the mask tokens, in order."""
    h = model(x, lengths, langs=langs, positions=positions, pred_mask=x == MASK_INDEX)
    return model.get_scores(h).float().log_softmax(-1)


class MaskFiller:
    def __init__(self, model_path, codes=None, vocab=None, lowercase=False):
        self.encoder = SentenceEncoder(model_path, codes=codes, lowercase=lowercase, vocab=vocab)
        # an MT run's encoder has an output layer too, never trained
        require_mlm_steps(model_path, self.encoder.params, unknown_ok=True)
        self.model, self.dico, self.lang2id = self.encoder.model, self.encoder.dico, self.encoder.lang2id
        self.tlm_steps = {tuple(s) for s in self.encoder.params.get("mlm_steps") or [] if s[1] is not None}

    def lang_id(self, lang):
        if self.lang2id and lang not in self.lang2id:
            raise DataError(f"--lang {lang}: not one of the model's languages ({', '.join(self.lang2id)})")
        return self.lang2id.get(lang) if len(self.lang2id) > 1 else None

    def context_first(self, lang, context_lang):
        """The run's TLM step order: (context, sentence) unless only (sentence, context) was trained."""
        return (context_lang, lang) in self.tlm_steps or (lang, context_lang) not in self.tlm_steps

    def check_length(self, tokens, what):
        longest = self.model.config.n_positions - 2  # and the two </s> around it (TLM: around each side)
        if len(tokens) > longest:
            raise DataError(f"{what} has {len(tokens)} subwords, more than the {longest} that the model's "
                            f"{self.model.config.n_positions} positions hold with the two </s>")

    def predict(self, tokens, flags, lang, context=None, context_lang=None):
        """Log-probabilities (masked tokens, n_words); context: the translation's tokens, or None."""
        ids = [MASK_INDEX if f else self.dico.index(t) for t, f in zip(tokens, flags)]
        if context is None:
            inputs = model_input(ids, self.lang_id(lang))
        else:
            if len(self.lang2id) < 2:
                raise DataError("--translation: the model has one language, so no TLM input")
            context_ids = [self.dico.index(t) for t in context]
            inputs = model_input(ids, self.lang_id(lang), context_ids, self.lang_id(context_lang),
                                 self.context_first(lang, context_lang))
        return masked_log_probs(self.model, *inputs)


def describe(dico, truth, log_probs, top_k):
    """'rank R  p P | w1 p1  w2 p2 ...' for one masked token; truth None when unknown."""
    top = log_probs.topk(min(top_k, len(log_probs)))
    guesses = "  ".join(f"{dico[int(i)]} {p:.2f}" for p, i in zip(top.values.exp().tolist(), top.indices))
    if truth is None:
        return f"{'':17}| {guesses}"
    t = dico.index(truth)
    rank = int((log_probs > log_probs[t]).sum()) + 1
    return f"rank {rank:<5} p {log_probs[t].exp():.2f} | {guesses}"


def show(filler, sentence, lang, indices, top_k, translation=None, translation_lang=None, out=sys.stdout):
    """Prints the predictions; returns, per run (alone, then with the translation), a list of
    (log-probability of the truth, whether it is the top prediction) for the masked tokens of known truth."""
    words = words_of(filler.encoder, sentence, lang)
    indices = indices(words) if callable(indices) else indices
    tokens, flags = mask_words(words, indices)
    if not any(flags):
        raise DataError(f"nothing to predict in '{sentence}': write <mask> or give --mask")
    filler.check_length(tokens, "the sentence")
    context = None
    if translation is not None:
        context = " ".join(" ".join(w) for w in words_of(filler.encoder, translation, translation_lang)).split()
        filler.check_length(context, "the translation")
    shown = " ".join(f"[{t or 'MASK'}]" if f else t for t, f in zip(tokens, flags))
    truths = [t for t, f in zip(tokens, flags) if f]
    runs = [(None, filler.predict(tokens, flags, lang))]
    print(f"{lang}: {shown}", file=out)
    if translation is not None:
        print(f"{translation_lang}: {' '.join(context)}", file=out)
        runs.append((context, filler.predict(tokens, flags, lang, context, translation_lang)))
    for k, truth in enumerate(truths):
        for n, (context, log_probs) in enumerate(runs):
            label = f"{truth or '?':>14} " if n == 0 else " " * 15
            where = "" if translation is None else (f"with {translation_lang:<3}" if context else f"alone{'':3}")
            print(f"  {label}{where} {describe(filler.dico, truth, log_probs[k], top_k)}", file=out)
    known = [(k, filler.dico.index(t)) for k, t in enumerate(truths) if t is not None]
    return [[(float(log_probs[k, t]), int(log_probs[k].argmax()) == t) for k, t in known] for _, log_probs in runs]


def summary(scores, translation_lang):
    """One line over every sentence's (log-probability, top) of its masked truths, alone and with the translation."""
    parts = []
    for name, run in zip(("alone", f"with {translation_lang}"), zip(*scores)):
        tokens = [score for sentence in run for score in sentence]
        if not tokens:
            raise DataError("no masked word of known truth to sum up (give --mask, not <mask>)")
        ppl = math.exp(-sum(lp for lp, _ in tokens) / len(tokens))
        parts.append(f"{name}: top-1 {sum(top for _, top in tokens)}/{len(tokens)}, perplexity {ppl:.1f}")
    return f"{len(scores)} sentences, masked tokens of known truth: " + "; ".join(parts)


def parse_mask(spec, seed):
    """--mask: a list of word indices, or a function of a sentence's words drawing one at random."""
    if spec is None:
        return []
    if spec == "random":
        rng = random.Random(seed)
        return lambda words: [random_word(words, rng)]
    try:
        return [int(i) for i in spec.split(",")]
    except ValueError:
        raise DataError(f"--mask {spec}: expected word indices like 3 or 1,-2, or 'random'") from None


def stdin_lines():
    """[(where, line)] of standard input, where is '<stdin>:N'; a line of invalid UTF-8 is a DataError naming it."""
    check_streams("stdin", hint=": give the sentences as arguments")
    return [(f"<stdin>:{first + i}", line) for first, lines in iter_stdin_blocks() for i, line in enumerate(lines)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="a pretrained model (MLM/TLM) in the original's checkpoint layout")
    parser.add_argument("sentences", nargs="*", help="raw sentences (default: one per line on stdin)")
    parser.add_argument("--lang", required=True, help="the sentences' language")
    parser.add_argument("--codes", help="the model's BPE codes (without: sentences are tokenized and BPE'd)")
    parser.add_argument("--vocab", help="the BPE vocabulary applybpe used with the codes, if any")
    parser.add_argument("--lowercase", action="store_true", help="lower-case and remove accents (XNLI-15 models)")
    parser.add_argument("--mask", help="word indices to mask (e.g. 3 or 1,-2), or 'random' (one per sentence)")
    parser.add_argument("--seed", type=int, default=0, help="for --mask random")
    parser.add_argument("--top_k", type=int, default=5, help="predictions shown per masked token (at least 1)")
    parser.add_argument("--translation", help="the sentence's translation, for TLM (one sentence only)")
    parser.add_argument("--translations", help="a file of the sentences' translations, one per line, for TLM")
    parser.add_argument("--translation_lang", help="the translation's language")
    parser.add_argument("--summary", action="store_true", help="with --translations: print only the summary line")
    args = parser.parse_intermixed_args(argv)
    if args.top_k < 1:
        raise DataError(f"--top_k must be >= 1, got {args.top_k}")
    if args.translation is not None and args.translations:
        raise DataError("--translation and --translations: give one of them")
    if args.summary and not args.translations:
        raise DataError("--summary needs --translations")
    if args.translation is not None and not args.translation.strip():
        raise DataError("--translation is empty")
    check_streams("stdout")
    # (where, sentence): where names the line of standard input an error is about; an argument is shown whole
    sentences = [(None, s) for s in args.sentences] or stdin_lines()
    if not args.translations:
        sentences = [(where, s) for where, s in sentences if s.strip()]
        if not sentences:
            raise DataError("no sentence: give it as an argument or on standard input")
        translations = [args.translation] * len(sentences)
    else:  # line by line: an empty line stays, so that the two files stay aligned
        translations = read_lines(args.translations)
        if len(translations) != len(sentences):
            raise DataError(f"--translations {args.translations}: {len(translations)} lines for {len(sentences)} "
                            f"sentences")
        pairs = [((f"{where + ', ' if where else ''}{args.translations}:{i}", s), t)
                 for i, ((where, s), t) in enumerate(zip(sentences, translations), 1) if s.strip() and t.strip()]
        if not pairs:
            raise DataError(f"--translations {args.translations}: no pair of non-empty lines")
        sentences, translations = (list(x) for x in zip(*pairs))
    if args.translation is not None and len(sentences) != 1:
        raise DataError("--translation needs exactly one sentence (--translations FILE for several)")
    if (args.translation is not None or args.translations) and not args.translation_lang:
        raise DataError("--translation and --translations need --translation_lang")
    filler = MaskFiller(args.checkpoint, args.codes, args.vocab, args.lowercase)
    indices = parse_mask(args.mask, args.seed)
    out = io.StringIO() if args.summary else sys.stdout
    scores = []
    for (where, sentence), translation in zip(sentences, translations):
        try:
            scores.append(show(filler, sentence, args.lang, indices, args.top_k, translation, args.translation_lang,
                               out))
        except DataError as e:
            raise DataError(f"{where}: {e}" if where else str(e)) from None
    if args.translations:
        print(summary(scores, args.translation_lang))


if __name__ == "__main__":
    try:
        main()
    except DataError as e:
        sys.exit(f"error: {e}")
