#!/usr/bin/env python3
"""Deterministic generator of toy languages that share one latent grammar.

Purpose
-------
Small, fully controlled stand-ins for the corpora used in XLM (Lample & Conneau,
2019) so that the whole pipeline can be exercised on a CPU in minutes:

* unsupervised MT after cross-lingual MLM pretraining: every language is a
  different *surface realisation* of the SAME latent sentence distribution, so
  monolingual corpora are "isomorphic" and can be aligned without parallel data;
  a few anchor tokens (numbers, proper names, the full stop) are spelled the same
  in every language, as digits and names are in real corpora;
* zero-shot cross-lingual classification: an XNLI-like 3-class sentence-pair task
  defined on latent sentences and rendered in every language.

Design (see also the README.txt written next to the data)
---------------------------------------------------------
Latent grammar (a template grammar, shared by all languages)::

    Sentence -> Clause [Connective Clause] "."
    Clause   -> [PP] Subject [NEG] [PAST] Verb [Object] [Adverb]
    NP       -> Name | (Det | Number) Adjective{0,2} Noun [PLUR] [PP]
    PP       -> Preposition NP            (no PP inside a PP's NP)

* Lexical concepts (nouns, verbs, adjectives, adverbs; ``--vocab_size`` of them)
  have a Zipf-Mandelbrot frequency (weight 1 / (rank + 2.7)) and each belongs to
  one of ``--n_domains`` semantic domains.  A sentence draws a topic domain and
  most of its words from that domain; a verb prefers objects from "its" object
  domain; an adjective prefers nouns of its domain.  This co-occurrence structure
  is what makes the languages alignable from monolingual data alone: with words
  drawn independently, all words of a category with similar frequency would be
  interchangeable and no method could align them.
* Verbs come in antonym pairs (same domain, same transitivity); transitive verbs
  always take an object, intransitive ones never.
* Connectives (because, although, while, after, before, since) are all veridical
  so that dropping the subordinate clause is always an entailment.
* Negation, past tense and plural are latent features, realised by one marker
  token each (position depends on the language).

Languages
---------
* Surface words are pseudo-words built from syllables of a per-language
  phonology (consonant/vowel/coda inventories drawn from the language's seed).
  Frequent concepts get shorter words.  Words never repeat within or across the
  languages of one run (collisions are rejected), so vocabularies are disjoint
  except for the anchors, which are capitalised names, digits and ".", never
  produced by the lower-case word generator.
* A fraction (``--compound_rate``) of open-class concepts is realised as TWO
  tokens ("compounds"), chosen independently per language, so translation is
  not a one-token-for-one-token substitution.
* Word order follows a typology preset (``--typology``); by default the i-th
  language of ``--langs`` gets the i-th preset of the cycle svo (English-like),
  svo_na (noun-adjective, tense suffix: Romance-like), sov (verb-final,
  postpositions, markers after the verb, subordinate clause first:
  Japanese/Turkish-like) and vso (verb-initial, Celtic-like).  Passing e.g.
  ``--typology svo,svo,svo`` gives pure lexical differences (easiest).
  Rendering is injective in every preset (no attachment ambiguity), so each
  surface sentence has exactly one latent analysis and one translation.

Classification task (latent level, see ``make_cls_example``)
------------------------------------------------------------
Only VP-internal modifiers (object adjectives, object PP, adverb, clause PP) are
edited, because negation scopes over exactly those: without negation dropping
them weakens a clause, under negation adding them does (monotonicity).

* entailment:   hypothesis = premise main clause, weakened (dropped modifiers if
                positive, added modifiers if negated; or only the subordinate
                clause dropped).
* contradiction: a weakened-or-identical main clause with negation flipped, or
                (positive premises only) with the verb replaced by its antonym.
* neutral:      same clause about a different subject (negation random), or the
                main clause strengthened (the opposite edit of entailment).

Half of the premises are negated.  Antonym and different-subject examples
(~12% of the data) need a word-identity comparison that small models trained
from scratch do not pick up quickly; they are a minority "hard tail" (see the
CLS_* constants).  Every example also carries a `kind` (weaken, drop_sub,
flip_neg, antonym, other_subject, strengthen) for error analysis.

Hence neither hypothesis alone (negation rate ~0.375-0.5 in every class) nor
word overlap alone (subset/superset means opposite things with and without
negation) solves the task, but a model comparing the two sentences can.

Determinism
-----------
All randomness comes from ``random.Random`` instances seeded with integers
derived (SHA-256) from ``--seed`` and a purpose string, and only their
``random()`` method is used (its stream is guaranteed stable across Python
versions and platforms; ``choice``/``shuffle`` are not).  Weights use only
additions and divisions (correctly rounded IEEE operations, no ``pow``), so
the output is identical byte for byte across runs and machines.  Sets are only
used for membership tests, never iterated into the output.

Example::

    python tools/toy_languages.py --out data/toy --langs la,lb,lc --seed 0
"""

from __future__ import annotations

import argparse
import bisect
import hashlib
import os
import random
import re
import sys
import time
from dataclasses import dataclass, field, replace
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from xlm.fileio import DataError, check_output_folder  # noqa: E402

# --------------------------------------------------------------------------
# Closed classes and anchors
# --------------------------------------------------------------------------

# Proper names: anchors, spelled identically in every language.  Capitalised,
# so they can never collide with generated (lower-case) words.
NAMES = (
    "Ada", "Boris", "Chen", "Dara", "Emil", "Fatima", "Goran", "Hana", "Ivan",
    "Jonas", "Kira", "Lars", "Mona", "Nadia", "Omar", "Petra", "Quinn", "Rosa",
    "Sami", "Tomas", "Uma", "Viktor", "Wanda", "Xenia", "Yusuf", "Zofia",
    "Anton", "Bianca", "Carlos", "Dmitri", "Elena", "Felix", "Greta", "Hugo",
    "Ines", "Jakob", "Karim", "Lena", "Marco", "Nina", "Oskar", "Paula",
    "Rafael", "Sofia", "Teo", "Vera", "Walter", "Yara",
)

# Numbers: anchors (digits).  Listed from most to least frequent.  They fill
# the determiner slot of plural noun phrases ("3 red dogs").
NUMBERS = (
    "2", "3", "4", "5", "10", "6", "7", "8", "9", "12", "20", "100", "15",
    "30", "50", "1000", "40",
)

STOP = "."  # sentence-final full stop, also an anchor

# Grammatical markers, one token each in every language.
GRAM_MARKERS = ("NEG", "PAST", "PLUR")

# Determiners: (gloss, allowed with singular, allowed with plural).  Quantifiers
# that are downward-monotone ("every", "no") are left out on purpose: they would
# break the monotonicity rules of the classification task.
DETERMINERS = (
    ("the", True, True), ("a", True, False), ("this", True, False),
    ("that", True, False), ("my", True, True), ("these", False, True),
    ("some", False, True), ("those", False, True), ("many", False, True),
)

PREPOSITIONS = ("in", "with", "on", "near", "for", "from", "under", "at", "behind", "to")

# Veridical connectives only: "A because B" entails A (unlike "if" or "when").
CONNECTIVES = ("because", "while", "after", "although", "before", "since")

LABELS = ("entailment", "neutral", "contradiction")  # XNLI label names

ANCHOR_CATS = ("punct", "name", "num")
FUNCTION_CATS = ("gram", "det", "prep", "conn")
OPEN_CATS = ("noun", "verb", "adj", "adv")

# Concept ids of the grammatical markers are fixed: they are created first.
STOP_ID, NEG_ID, PAST_ID, PLUR_ID = 0, 1, 2, 3

# --------------------------------------------------------------------------
# Sampling probabilities of the latent grammar (module constants, documented
# in the README; changing them changes the data for every seed).
# --------------------------------------------------------------------------

ZIPF_OFFSET = 2.7      # Zipf-Mandelbrot: weight(rank) = 1 / (rank + ZIPF_OFFSET)
P_IN_DOMAIN = 0.75     # probability that a word is drawn from the preferred domain
P_NAME_SUBJ = 0.30     # subject is a proper name
P_NAME_OBJ = 0.15      # object is a proper name
P_NAME_PP = 0.15       # NP inside a PP is a proper name
P_PLURAL = 0.30        # noun phrase is plural
P_NUMBER = 0.40        # plural NP uses a number instead of a determiner
P_ADJ1 = 0.30          # exactly one adjective
P_ADJ2 = 0.08          # exactly two adjectives
P_NP_PP = 0.10         # noun phrase (subject/object) has a PP attached
P_ADV = 0.30           # clause has an adverb
P_CLAUSE_PP = 0.30     # clause has a PP
P_NEG = 0.20           # clause is negated
P_PAST = 0.40          # clause is in the past tense
P_SUB = 0.25           # sentence has a subordinate clause
P_SUB_SAME_TOPIC = 0.6 # subordinate clause keeps the main clause topic
P_TRANSITIVE = 0.6     # fraction of verb pairs that are transitive
MIN_LEN, MAX_LEN = 4, 26  # bounds on the latent length (tokens incl. "."); the
                          # surface adds one token per compound word (~0-4)

# Classification task.  Antonym and other-subject examples need a word-identity
# comparison between premise and hypothesis, which small models trained from
# scratch did not learn (even from 30k examples; ~10% accuracy on them, while
# negation/monotonicity cases reached ~90%), so they are kept as a minority
# (~12% of the data): a "hard tail" that rewards better (pretrained) models.
CLS_P_NEG = 0.50       # premise main clause negated (balances hypothesis-only cues)
CLS_P_ANTONYM = 0.25   # positive-premise contradictions made by a verb antonym
CLS_P_KEEP_CLAUSE = 0.30  # contradiction/neutral(a): hypothesis keeps the clause as is
CLS_P_ONLY_SUB = 0.30  # entailment with a subordinate clause: only drop that clause
CLS_P_OTHER_SUBJ = 0.25  # neutral by a different subject (else by strengthening)

# --------------------------------------------------------------------------
# Deterministic randomness helpers
# --------------------------------------------------------------------------


def derive_seed(seed: int, *parts: str) -> int:
    """Independent, stable integer seed for one purpose (grammar, a language...).

    Python's hash() is salted per process, so a cryptographic hash is used.
    Separate streams mean that, e.g., changing --n_mono does not change the
    lexicon or the test sets.
    """
    text = "toy_languages|" + str(seed) + "|" + "|".join(parts)
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


def make_rng(seed: int, *parts: str) -> random.Random:
    return random.Random(derive_seed(seed, *parts))


def rand_below(rng: random.Random, n: int) -> int:
    """Uniform integer in [0, n) using only rng.random() (stable across versions)."""
    return min(int(rng.random() * n), n - 1)


def shuffled(rng: random.Random, items: Sequence) -> list:
    """Fisher-Yates shuffle using only rng.random()."""
    out = list(items)
    for i in range(len(out) - 1, 0, -1):
        j = rand_below(rng, i + 1)
        out[i], out[j] = out[j], out[i]
    return out


def zipf_weight(rank: int) -> float:
    """Zipf-Mandelbrot weight of a 1-based rank (exponent 1: division only)."""
    return 1.0 / (rank + ZIPF_OFFSET)


@dataclass
class Table:
    """Weighted sampling over concept ids by bisection on cumulative weights.

    `bounds` holds the cumulative weights without the last one, so bisection
    always returns a valid index (no bounds check on the hot path).
    """

    ids: List[int]
    bounds: List[float]
    total: float

    @classmethod
    def build(cls, ids: Sequence[int], weights: Sequence[float]) -> "Table":
        cum, total = [], 0.0
        for w in weights:
            total += w
            cum.append(total)
        return cls(list(ids), cum[:-1], total)

    def sample(self, rng: random.Random) -> int:
        return self.ids[bisect.bisect_right(self.bounds, rng.random() * self.total)]


# --------------------------------------------------------------------------
# Latent lexicon and grammar
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Concept:
    cid: int
    cat: str      # punct, gram, det, prep, conn, name, num, noun, verb, adj, adv
    gloss: str    # language-neutral label; the surface form of anchors
    weight: float  # Zipf weight within its category
    domain: int   # semantic domain, -1 when not meaningful


@dataclass
class Grammar:
    """The latent lexicon plus everything needed to sample latent sentences."""

    concepts: List[Concept]
    n_domains: int
    by_cat: Dict[str, List[int]]
    tables: Dict[str, Table]                    # per category
    domain_tables: Dict[Tuple[str, int], Table]  # per (category, domain)
    det_sg: Table
    det_pl: Table
    transitive: List[bool]   # per concept id (verbs only meaningful)
    obj_domain: List[int]    # preferred object domain of a verb
    antonym: List[int]       # antonym verb id, -1 if none

    def pick(self, rng: random.Random, cat: str, domain: int = -1) -> int:
        """Draw a concept of a category, from `domain` with prob. P_IN_DOMAIN."""
        if domain >= 0 and rng.random() < P_IN_DOMAIN:
            table = self.domain_tables.get((cat, domain))
            if table is not None:
                return table.sample(rng)
        return self.tables[cat].sample(rng)

    def is_noun(self, cid: int) -> bool:
        return self.concepts[cid].cat == "noun"


def split_vocab(vocab_size: int) -> Dict[str, int]:
    """Open-class sizes: 45% nouns, 25% verbs (even: antonym pairs), 20% adj."""
    n_noun = vocab_size * 45 // 100
    n_verb = (vocab_size * 25 // 100) // 2 * 2
    n_adj = vocab_size * 20 // 100
    n_adv = vocab_size - n_noun - n_verb - n_adj
    return {"noun": n_noun, "verb": n_verb, "adj": n_adj, "adv": n_adv}


def build_grammar(seed: int, vocab_size: int = 1000, n_domains: int = 10) -> Grammar:
    if vocab_size < 40:
        raise ValueError("vocab_size must be at least 40")
    if n_domains < 1:
        raise ValueError("n_domains must be at least 1")
    rng = make_rng(seed, "grammar")
    concepts: List[Concept] = []

    def add(cat: str, gloss: str, rank: int, domain: int = -1) -> int:
        concepts.append(Concept(len(concepts), cat, gloss, zipf_weight(rank), domain))
        return len(concepts) - 1

    add("punct", STOP, 1)
    for i, g in enumerate(GRAM_MARKERS):
        add("gram", g, i + 1)
    det_ids = [add("det", g, i + 1) for i, (g, _, _) in enumerate(DETERMINERS)]
    for i, g in enumerate(PREPOSITIONS):
        add("prep", g, i + 1, rand_below(rng, n_domains))
    for i, g in enumerate(CONNECTIVES):
        add("conn", g, i + 1)
    for i, g in enumerate(NAMES):
        add("name", g, i + 1, rand_below(rng, n_domains))
    for i, g in enumerate(NUMBERS):
        add("num", g, i + 1)
    assert [concepts[i].gloss for i in (STOP_ID, NEG_ID, PAST_ID, PLUR_ID)] == [STOP, *GRAM_MARKERS]

    sizes = split_vocab(vocab_size)
    for i in range(sizes["noun"]):
        add("noun", f"noun{i}", i + 1, rand_below(rng, n_domains))
    first_verb = len(concepts)
    verb_props = []
    for k in range(sizes["verb"] // 2):
        # Antonym pairs share domain, object domain and transitivity so that
        # swapping one for the other keeps the sentence well-formed.
        dom = rand_below(rng, n_domains)
        obj_dom = rand_below(rng, n_domains)
        trans = rng.random() < P_TRANSITIVE
        for j in range(2):
            add("verb", f"verb{2 * k + j}", 2 * k + j + 1, dom)
            verb_props.append((trans, obj_dom))
    for i in range(sizes["adj"]):
        add("adj", f"adj{i}", i + 1, rand_below(rng, n_domains))
    for i in range(sizes["adv"]):
        add("adv", f"adv{i}", i + 1, rand_below(rng, n_domains))

    n = len(concepts)
    transitive, obj_domain, antonym = [False] * n, [-1] * n, [-1] * n
    for k, (trans, obj_dom) in enumerate(verb_props):
        cid = first_verb + k
        transitive[cid], obj_domain[cid] = trans, obj_dom
        antonym[cid] = cid + 1 if k % 2 == 0 else cid - 1

    by_cat: Dict[str, List[int]] = {}
    for c in concepts:
        by_cat.setdefault(c.cat, []).append(c.cid)
    tables = {
        cat: Table.build(ids, [concepts[i].weight for i in ids]) for cat, ids in by_cat.items()
    }
    domain_tables: Dict[Tuple[str, int], Table] = {}
    for cat in ("noun", "verb", "adj", "adv", "name"):
        for d in range(n_domains):
            ids = [i for i in by_cat[cat] if concepts[i].domain == d]
            if ids:
                domain_tables[(cat, d)] = Table.build(ids, [concepts[i].weight for i in ids])
    sg = [i for i, (_, s, _) in zip(det_ids, DETERMINERS) if s]
    pl = [i for i, (_, _, p) in zip(det_ids, DETERMINERS) if p]
    return Grammar(
        concepts=concepts, n_domains=n_domains, by_cat=by_cat, tables=tables,
        domain_tables=domain_tables,
        det_sg=Table.build(sg, [concepts[i].weight for i in sg]),
        det_pl=Table.build(pl, [concepts[i].weight for i in pl]),
        transitive=transitive, obj_domain=obj_domain, antonym=antonym,
    )


# --------------------------------------------------------------------------
# Latent sentences (frozen, hence hashable: used to hold out eval sentences)
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class NP:
    head: int                      # noun or name concept id
    det: Optional[int] = None      # determiner or number concept id
    adjs: Tuple[int, ...] = ()
    plural: bool = False
    pp: Optional["PP"] = None


@dataclass(frozen=True)
class PP:
    prep: int
    np: NP


@dataclass(frozen=True)
class Clause:
    subj: NP
    verb: int
    obj: Optional[NP] = None
    adv: Optional[int] = None
    pp: Optional[PP] = None
    neg: bool = False
    past: bool = False


@dataclass(frozen=True)
class Sentence:
    main: Clause
    conn: Optional[int] = None
    sub: Optional[Clause] = None


def sample_np(g: Grammar, rng: random.Random, domain: int, p_name: float, allow_pp: bool) -> NP:
    if rng.random() < p_name:
        return NP(head=g.pick(rng, "name", domain))
    noun = g.pick(rng, "noun", domain)
    noun_domain = g.concepts[noun].domain
    plural = rng.random() < P_PLURAL
    if plural and rng.random() < P_NUMBER:
        det = g.tables["num"].sample(rng)
    else:
        det = (g.det_pl if plural else g.det_sg).sample(rng)
    r = rng.random()
    n_adj = 2 if r < P_ADJ2 else 1 if r < P_ADJ2 + P_ADJ1 else 0
    adjs: List[int] = []
    while len(adjs) < n_adj:
        a = g.pick(rng, "adj", noun_domain)
        if a not in adjs:
            adjs.append(a)
    pp = sample_pp(g, rng) if allow_pp and rng.random() < P_NP_PP else None
    return NP(noun, det, tuple(adjs), plural, pp)


def sample_pp(g: Grammar, rng: random.Random) -> PP:
    prep = g.tables["prep"].sample(rng)
    # The preposition's domain stands for its selectional preference
    # ("in" + places, "with" + tools...).
    return PP(prep, sample_np(g, rng, g.concepts[prep].domain, P_NAME_PP, allow_pp=False))


def sample_clause(g: Grammar, rng: random.Random, topic: int) -> Clause:
    subj = sample_np(g, rng, topic, P_NAME_SUBJ, allow_pp=True)
    verb = g.pick(rng, "verb", topic)
    obj = None
    if g.transitive[verb]:
        obj = sample_np(g, rng, g.obj_domain[verb], P_NAME_OBJ, allow_pp=True)
    adv = g.pick(rng, "adv", g.concepts[verb].domain) if rng.random() < P_ADV else None
    pp = sample_pp(g, rng) if rng.random() < P_CLAUSE_PP else None
    neg = rng.random() < P_NEG
    past = rng.random() < P_PAST
    return Clause(subj, verb, obj, adv, pp, neg, past)


def np_length(np_: NP) -> int:
    n = 1 + (np_.det is not None) + len(np_.adjs) + np_.plural
    return n + (1 + np_length(np_.pp.np) if np_.pp else 0)


def clause_length(c: Clause) -> int:
    n = np_length(c.subj) + 1 + c.neg + c.past + (c.adv is not None)
    n += np_length(c.obj) if c.obj else 0
    return n + (1 + np_length(c.pp.np) if c.pp else 0)


def sentence_length(s: Sentence) -> int:
    """Latent length: surface length in any language without compound words."""
    return clause_length(s.main) + (1 + clause_length(s.sub) if s.sub else 0) + 1


def sample_sentence(g: Grammar, rng: random.Random) -> Sentence:
    while True:
        topic = rand_below(rng, g.n_domains)
        main = sample_clause(g, rng, topic)
        conn = sub = None
        if rng.random() < P_SUB:
            conn = g.tables["conn"].sample(rng)
            sub_topic = topic if rng.random() < P_SUB_SAME_TOPIC else rand_below(rng, g.n_domains)
            sub = sample_clause(g, rng, sub_topic)
        s = Sentence(main, conn, sub)
        if MIN_LEN <= sentence_length(s) <= MAX_LEN:
            return s


def sample_corpus(g: Grammar, rng: random.Random, n: int, exclude=frozenset()) -> List[Sentence]:
    """n latent sentences, skipping those in `exclude` (held-out eval sentences)."""
    out: List[Sentence] = []
    while len(out) < n:
        s = sample_sentence(g, rng)
        if s not in exclude:
            out.append(s)
    return out


# --------------------------------------------------------------------------
# Languages: surface lexicon + word order
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Typology:
    name: str
    order: str              # "SVO", "SOV" or "VSO"
    adj_after_noun: bool
    postpositions: bool     # also puts a noun's PP before the noun
    neg_after_verb: bool
    past_suffix: bool       # PAST marker after the verb (else auxiliary before)
    sub_clause_first: bool  # "B because , A"-style: connective after the sub clause
    description: str


TYPOLOGIES: Dict[str, Typology] = {
    t.name: t
    for t in (
        Typology("svo", "SVO", False, False, False, False, False,
                 "English-like: SVO, adjective-noun, prepositions, NEG and PAST before the verb"),
        Typology("svo_na", "SVO", True, False, False, True, False,
                 "Romance-like: SVO, noun-adjective, prepositions, PAST as a suffix token"),
        Typology("sov", "SOV", False, True, True, True, True,
                 "Japanese/Turkish-like: verb-final, postpositions, NEG and PAST after the verb, "
                 "subordinate clause first with a final connective"),
        Typology("vso", "VSO", True, False, False, False, False,
                 "Celtic-like: verb-initial, noun-adjective, prepositions"),
    )
}
DEFAULT_TYPOLOGY_CYCLE = ("svo", "svo_na", "sov", "vso")

CONSONANTS = ("p", "t", "k", "b", "d", "g", "m", "n", "s", "l", "r", "v", "z", "f",
              "h", "w", "j", "sh", "ch", "th", "kh", "ts")
VOWELS = ("a", "e", "i", "o", "u", "y", "aa", "ei", "ou", "ai", "ee", "oo")
CODAS = ("n", "m", "s", "r", "l", "k", "t", "ng")


@dataclass(frozen=True)
class Phonology:
    """Per-language sound inventory: makes each language look different."""

    onsets: Tuple[str, ...]
    vowels: Tuple[str, ...]
    codas: Tuple[str, ...]
    p_coda: float
    p_vowel_initial: float

    def word(self, rng: random.Random, n_syll: int) -> str:
        parts = []
        for k in range(n_syll):
            if k > 0 or rng.random() >= self.p_vowel_initial:
                parts.append(self.onsets[rand_below(rng, len(self.onsets))])
            parts.append(self.vowels[rand_below(rng, len(self.vowels))])
            if rng.random() < self.p_coda:
                parts.append(self.codas[rand_below(rng, len(self.codas))])
        return "".join(parts)


def sample_phonology(rng: random.Random) -> Phonology:
    return Phonology(
        onsets=tuple(shuffled(rng, CONSONANTS)[: 8 + rand_below(rng, 5)]),
        vowels=tuple(shuffled(rng, VOWELS)[: 4 + rand_below(rng, 3)]),
        codas=tuple(shuffled(rng, CODAS)[: 2 + rand_below(rng, 3)]),
        p_coda=0.15 + 0.3 * rng.random(),
        p_vowel_initial=0.1 + 0.15 * rng.random(),
    )


@dataclass
class Language:
    code: str
    typology: Typology
    phonology: Phonology
    words: List[Tuple[str, ...]]   # surface tokens of every concept id

    @property
    def n_compounds(self) -> int:
        return sum(1 for w in self.words if len(w) > 1)


def fresh_word(rng: random.Random, phon: Phonology, n_syll: int, taken: set) -> str:
    """A word not yet used by any language of the run (more syllables if needed)."""
    attempt = 0
    while True:
        w = phon.word(rng, n_syll + attempt // 25)
        if w not in taken:
            taken.add(w)
            return w
        attempt += 1


def syllables_for_rank(rng: random.Random, rank: int) -> int:
    """Zipf's law of abbreviation: frequent concepts get shorter words."""
    base = 1 if rank < 60 else 2 if rank < 500 else 3
    return base + (rng.random() < 0.5)


def build_language(g: Grammar, code: str, typology: Typology, seed: int,
                   taken: set, compound_rate: float = 0.1,
                   parent: Optional["Language"] = None, cognate_rate: float = 0.0) -> Language:
    """Surface lexicon of one language.

    `taken` holds the words of the languages built before this one and is
    updated: it is what makes vocabularies disjoint.  The lexicon depends on the
    seed and the language code (not its position), except in the rare case of a
    collision with an earlier language's word.  With a `parent`, each
    non-anchor concept keeps the parent's word with probability `cognate_rate`
    (a related language: shared words, as Hindi and Nepali share many).
    """
    rng = make_rng(seed, "lexicon", code)
    cognate_rng = make_rng(seed, "cognates", code)  # its own stream: the default output is unchanged
    phon = sample_phonology(rng)

    def cognate() -> bool:
        return parent is not None and cognate_rng.random() < cognate_rate
    words: List[Optional[Tuple[str, ...]]] = [None] * len(g.concepts)
    for c in g.concepts:
        if c.cat in ANCHOR_CATS:
            words[c.cid] = (c.gloss,)
    # Function words and markers: monosyllables, as in most languages.
    for c in g.concepts:
        if c.cat in FUNCTION_CATS:
            words[c.cid] = parent.words[c.cid] if cognate() else (fresh_word(rng, phon, 1, taken),)
    # Open classes, most frequent first, across categories.
    open_ids = [c.cid for c in g.concepts if c.cat in OPEN_CATS]
    open_ids.sort(key=lambda i: (-g.concepts[i].weight, i))
    for rank, cid in enumerate(open_ids):
        if cognate():
            words[cid] = parent.words[cid]
            continue
        n_syll = syllables_for_rank(rng, rank)
        if rng.random() < compound_rate:
            part = max(1, n_syll - 1)
            words[cid] = (fresh_word(rng, phon, part, taken), fresh_word(rng, phon, part, taken))
        else:
            words[cid] = (fresh_word(rng, phon, n_syll, taken),)
    return Language(code, typology, phon, words)  # type: ignore[arg-type]


def build_languages(g: Grammar, codes: Sequence[str], typologies: Sequence[str],
                    seed: int, compound_rate: float = 0.1,
                    cognates: Optional[Dict[str, Tuple[str, float]]] = None) -> List[Language]:
    """`cognates`: child code -> (parent code, share of words kept); parents come first in `codes`."""
    taken: set = set()
    built: Dict[str, Language] = {}
    for code, t in zip(codes, typologies):
        parent, rate = (cognates or {}).get(code, (None, 0.0))
        built[code] = build_language(g, code, TYPOLOGIES[t], seed, taken, compound_rate,
                                     built[parent] if parent else None, rate)
    return [built[code] for code in codes]


def gloss_language(g: Grammar, typology: str = "svo") -> Language:
    """A readable pseudo-language whose words are the concept glosses
    ("the adj3 noun12 PLUR NEG verb7 ."), for debugging and error analysis."""
    return Language("gloss", TYPOLOGIES[typology], sample_phonology(random.Random(0)),
                    [(c.gloss,) for c in g.concepts])


# --------------------------------------------------------------------------
# Rendering latent structures as token lists
# --------------------------------------------------------------------------


def render_np(lang: Language, np_: NP) -> List[str]:
    w, t = lang.words, lang.typology
    noun = list(w[np_.head]) + (list(w[PLUR_ID]) if np_.plural else [])
    adjs = [tok for a in np_.adjs for tok in w[a]]
    core = noun + adjs if t.adj_after_noun else adjs + noun
    if np_.det is not None:
        core = list(w[np_.det]) + core
    if np_.pp is not None:
        pp = render_pp(lang, np_.pp)
        core = pp + core if t.postpositions else core + pp
    return core


def render_pp(lang: Language, pp: PP) -> List[str]:
    np_tokens = render_np(lang, pp.np)
    prep = list(lang.words[pp.prep])
    return np_tokens + prep if lang.typology.postpositions else prep + np_tokens


def render_clause(lang: Language, c: Clause) -> List[str]:
    w, t = lang.words, lang.typology
    subj = render_np(lang, c.subj)
    obj = render_np(lang, c.obj) if c.obj is not None else []
    verb = list(w[c.verb])
    if c.past:
        verb = verb + list(w[PAST_ID]) if t.past_suffix else list(w[PAST_ID]) + verb
    if c.neg:
        verb = verb + list(w[NEG_ID]) if t.neg_after_verb else list(w[NEG_ID]) + verb
    adv = list(w[c.adv]) if c.adv is not None else []
    pp = render_pp(lang, c.pp) if c.pp is not None else []
    # The clause PP goes first in verb-medial/initial orders ("in the house ,
    # Ada eats apples" without the comma): after the object it could be read
    # as the object's own PP, and rendering must stay unambiguous (injective)
    # so that held-out latent sentences are also held out on the surface and
    # translation is a function.  In SOV it sits before the verb, where an
    # object PP (placed before the object noun) cannot be confused with it.
    if t.order == "SVO":
        return pp + subj + verb + obj + adv
    if t.order == "SOV":
        return subj + obj + pp + adv + verb
    if t.order == "VSO":
        return pp + verb + subj + obj + adv
    raise ValueError(f"unknown word order {t.order}")


def render_sentence(lang: Language, s: Sentence) -> List[str]:
    tokens = render_clause(lang, s.main)
    if s.sub is not None:
        sub = render_clause(lang, s.sub)
        conn = list(lang.words[s.conn])
        tokens = sub + conn + tokens if lang.typology.sub_clause_first else tokens + conn + sub
    return tokens + list(lang.words[STOP_ID])


def render_line(lang: Language, s: Sentence) -> str:
    return " ".join(render_sentence(lang, s))


# --------------------------------------------------------------------------
# XNLI-like classification task on latent sentences
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class ClsExample:
    premise: Sentence
    hypothesis: Clause
    label: str
    kind: str  # how the hypothesis was made (for error analysis), see make_cls_example


def droppable(g: Grammar, c: Clause) -> List[Tuple[str, int]]:
    """VP-internal modifiers of a clause (the scope of its negation)."""
    ops: List[Tuple[str, int]] = []
    if c.obj is not None:
        ops += [("obj_adj", i) for i in range(len(c.obj.adjs))]
        if c.obj.pp is not None:
            ops.append(("obj_pp", 0))
    if c.adv is not None:
        ops.append(("adv", 0))
    if c.pp is not None:
        ops.append(("pp", 0))
    return ops


def addable(g: Grammar, c: Clause) -> List[str]:
    ops = []
    if c.obj is not None and g.is_noun(c.obj.head) and len(c.obj.adjs) < 2:
        ops.append("obj_adj")
    if c.adv is None:
        ops.append("adv")
    if c.pp is None:
        ops.append("pp")
    return ops


def drop_modifiers(g: Grammar, rng: random.Random, c: Clause) -> Clause:
    """Drop a non-empty random subset of the droppable modifiers."""
    ops = droppable(g, c)
    chosen = [op for op in ops if rng.random() < 0.5]
    if not chosen:
        chosen = [ops[rand_below(rng, len(ops))]]
    obj, adv, pp = c.obj, c.adv, c.pp
    if obj is not None:
        drop_adj = {i for kind, i in chosen if kind == "obj_adj"}
        adjs = tuple(a for i, a in enumerate(obj.adjs) if i not in drop_adj)
        obj = replace(obj, adjs=adjs, pp=None if ("obj_pp", 0) in chosen else obj.pp)
    if ("adv", 0) in chosen:
        adv = None
    if ("pp", 0) in chosen:
        pp = None
    return replace(c, obj=obj, adv=adv, pp=pp)


def add_modifiers(g: Grammar, rng: random.Random, c: Clause) -> Clause:
    """Add a non-empty random subset of the addable modifiers."""
    ops = addable(g, c)
    chosen = [op for op in ops if rng.random() < 0.4]
    if not chosen:
        chosen = [ops[rand_below(rng, len(ops))]]
    obj, adv, pp = c.obj, c.adv, c.pp
    if "obj_adj" in chosen:
        while True:
            a = g.pick(rng, "adj", g.concepts[obj.head].domain)
            if a not in obj.adjs:
                break
        obj = replace(obj, adjs=obj.adjs + (a,))
    if "adv" in chosen:
        adv = g.pick(rng, "adv", g.concepts[c.verb].domain)
    if "pp" in chosen:
        pp = sample_pp(g, rng)
    return replace(c, obj=obj, adv=adv, pp=pp)


def weaken(g: Grammar, rng: random.Random, c: Clause) -> Clause:
    """A clause entailed by c: fewer modifiers if positive, more if negated."""
    return add_modifiers(g, rng, c) if c.neg else drop_modifiers(g, rng, c)


def strengthen(g: Grammar, rng: random.Random, c: Clause) -> Clause:
    """A clause that entails c but is not entailed by it (the opposite edit)."""
    return drop_modifiers(g, rng, c) if c.neg else add_modifiers(g, rng, c)


def sample_cls_premise(g: Grammar, rng: random.Random) -> Sentence:
    """A premise whose main clause can be both weakened and strengthened."""
    while True:
        s = sample_sentence(g, rng)
        if droppable(g, s.main) and addable(g, s.main):
            main = replace(s.main, neg=rng.random() < CLS_P_NEG)
            return replace(s, main=main)


def other_subject(g: Grammar, rng: random.Random, c: Clause) -> NP:
    domain = g.concepts[c.verb].domain
    while True:
        subj = sample_np(g, rng, domain, P_NAME_SUBJ, allow_pp=False)
        if subj.head != c.subj.head:
            return subj


def make_cls_example(g: Grammar, rng: random.Random, label: str) -> ClsExample:
    premise = sample_cls_premise(g, rng)
    m = premise.main
    if label == "entailment":
        if premise.sub is not None and rng.random() < CLS_P_ONLY_SUB:
            h, kind = m, "drop_sub"  # "A because B" entails "A"
        else:
            h, kind = weaken(g, rng, m), "weaken"
    elif label == "contradiction":
        base = m if rng.random() < CLS_P_KEEP_CLAUSE else weaken(g, rng, m)
        if not m.neg and rng.random() < CLS_P_ANTONYM:
            # Contraries exclude each other only in positive statements
            # ("A opens X" vs "A closes X"; both negations can be true).
            h, kind = replace(base, verb=g.antonym[base.verb]), "antonym"
        else:
            h, kind = replace(base, neg=not base.neg), "flip_neg"
    elif label == "neutral":
        if rng.random() < CLS_P_OTHER_SUBJ:
            base = m if rng.random() < CLS_P_KEEP_CLAUSE else weaken(g, rng, m)
            neg = base.neg if rng.random() < 0.5 else not base.neg
            h, kind = replace(base, subj=other_subject(g, rng, base), neg=neg), "other_subject"
        else:
            h, kind = strengthen(g, rng, m), "strengthen"
    else:
        raise ValueError(f"unknown label {label!r}")
    return ClsExample(premise, h, label, kind)


def balanced_labels(rng: random.Random, n: int) -> List[str]:
    """n labels, counts differing by at most one, in random order."""
    return shuffled(rng, [LABELS[i % len(LABELS)] for i in range(n)])


def sample_cls(g: Grammar, rng: random.Random, n: int) -> List[ClsExample]:
    return [make_cls_example(g, rng, label) for label in balanced_labels(rng, n)]


def render_cls(lang: Language, ex: ClsExample) -> str:
    premise = " ".join(render_sentence(lang, ex.premise))
    hypothesis = " ".join(render_sentence(lang, Sentence(ex.hypothesis)))
    return f"{premise}\t{hypothesis}\t{ex.label}"


# --------------------------------------------------------------------------
# Whole data set
# --------------------------------------------------------------------------


@dataclass
class Config:
    out: str
    langs: List[str] = field(default_factory=lambda: ["la", "lb", "lc"])
    typologies: List[str] = field(default_factory=list)  # default: cycle
    n_mono: int = 50000
    n_para: int = 5000
    n_valid: int = 1000
    n_test: int = 1000
    n_cls_train: int = 10000
    n_cls_eval: int = 1000
    seed: int = 0
    vocab_size: int = 1000
    n_domains: int = 10
    compound_rate: float = 0.1
    cognates: Dict[str, Tuple[str, float]] = field(default_factory=dict)  # child -> (parent, rate)

    def __post_init__(self) -> None:
        if not self.typologies:
            self.typologies = [DEFAULT_TYPOLOGY_CYCLE[i % len(DEFAULT_TYPOLOGY_CYCLE)]
                               for i in range(len(self.langs))]
        if len(self.typologies) != len(self.langs):
            raise ValueError("--typology needs one entry per language")
        for t in self.typologies:
            if t not in TYPOLOGIES:
                raise ValueError(f"unknown typology {t!r}; choose from {sorted(TYPOLOGIES)}")
        if len(set(self.langs)) != len(self.langs) or not self.langs:
            raise ValueError("--langs must be a non-empty list of distinct codes")
        for code in self.langs:
            if not re.fullmatch(r"[a-z][a-z0-9_]*", code):
                raise ValueError(f"bad language code {code!r} (lower-case letters/digits)")
        if not 0.0 <= self.compound_rate <= 1.0:
            raise ValueError("--compound_rate must be in [0, 1]")
        for child, (parent, rate) in self.cognates.items():
            if child not in self.langs or parent not in self.langs[: self.langs.index(child)]:
                raise ValueError(f"--cognates {child}={parent}: both must be in --langs, the parent first")
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"--cognates {child}={parent}:{rate}: the share must be in [0, 1]")
        for name in ("n_mono", "n_para", "n_valid", "n_test", "n_cls_train", "n_cls_eval"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name} must be >= 0")
        if self.vocab_size < 40:  # build_grammar's limits, found before any work
            raise ValueError("--vocab_size must be at least 40")
        if self.n_domains < 1:
            raise ValueError("--n_domains must be at least 1")
        try:
            check_output_folder(self.out)
        except DataError as e:
            raise ValueError(f"--out {e}") from None

    def command(self) -> str:
        """The command line that reproduces the data (output dir left out so
        that the README is identical wherever the data is written)."""
        args = [
            "python tools/toy_languages.py --out <DIR>",
            f"--langs {','.join(self.langs)}", f"--typology {','.join(self.typologies)}",
            f"--n_mono {self.n_mono}", f"--n_para {self.n_para}",
            f"--n_valid {self.n_valid}", f"--n_test {self.n_test}",
            f"--n_cls_train {self.n_cls_train}", f"--n_cls_eval {self.n_cls_eval}",
            f"--seed {self.seed}", f"--vocab_size {self.vocab_size}",
            f"--n_domains {self.n_domains}", f"--compound_rate {self.compound_rate}",
        ]
        if self.cognates:
            args.append("--cognates " + ",".join(f"{c}={p}:{r}" for c, (p, r) in self.cognates.items()))
        return " ".join(args)


SPLITS = ("train", "valid", "test")


def pairs(langs: Sequence[str]) -> List[Tuple[str, str]]:
    """All language pairs, each in alphabetical order (XLM file naming)."""
    out = []
    for i, a in enumerate(langs):
        for b in langs[i + 1:]:
            out.append((a, b) if a < b else (b, a))
    return sorted(out)


@dataclass
class World:
    """Grammar and languages of a configuration: everything but the corpora."""

    grammar: Grammar
    languages: List[Language]

    def lang(self, code: str) -> Language:
        return next(lg for lg in self.languages if lg.code == code)


def build_world(cfg: Config) -> World:
    g = build_grammar(cfg.seed, cfg.vocab_size, cfg.n_domains)
    return World(g, build_languages(g, cfg.langs, cfg.typologies, cfg.seed, cfg.compound_rate, cfg.cognates))


@dataclass
class Corpora:
    mono: Dict[Tuple[str, str], List[Sentence]]   # (split, lang) -> sentences
    para: Dict[str, List[Sentence]]               # split -> sentences (shared by all pairs)
    cls: Dict[str, List[ClsExample]]              # split -> examples (shared by all langs)


def sample_corpora(cfg: Config, g: Grammar) -> Corpora:
    """All latent data.  Evaluation sentences are drawn first and excluded from
    every training set, so valid/test sentences are never seen in training.

    Each (purpose, language, split) has its own random stream: monolingual
    corpora of different languages are independent samples (the unsupervised
    setting), while parallel and classification data are multi-way parallel
    (the same latent sentences for every pair/language, so scores compare).
    """
    sizes = {"valid": cfg.n_valid, "test": cfg.n_test}
    para: Dict[str, List[Sentence]] = {}
    mono: Dict[Tuple[str, str], List[Sentence]] = {}
    for split in ("valid", "test"):
        para[split] = sample_corpus(g, make_rng(cfg.seed, "para", split), sizes[split])
        for code in cfg.langs:
            mono[(split, code)] = sample_corpus(g, make_rng(cfg.seed, "mono", code, split), sizes[split])
    heldout = set(para["valid"]) | set(para["test"])
    for code in cfg.langs:
        heldout.update(mono[("valid", code)])
        heldout.update(mono[("test", code)])
    for code in cfg.langs:
        mono[("train", code)] = sample_corpus(
            g, make_rng(cfg.seed, "mono", code, "train"), cfg.n_mono, heldout)
    para["train"] = sample_corpus(g, make_rng(cfg.seed, "para", "train"), cfg.n_para, heldout)
    cls = {
        "train": sample_cls(g, make_rng(cfg.seed, "cls", "train"), cfg.n_cls_train),
        "valid": sample_cls(g, make_rng(cfg.seed, "cls", "valid"), cfg.n_cls_eval),
        "test": sample_cls(g, make_rng(cfg.seed, "cls", "test"), cfg.n_cls_eval),
    }
    return Corpora(mono, para, cls)


def write_lines(path: str, lines: Iterable[str]) -> int:
    n = 0
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for line in lines:
            f.write(line)
            f.write("\n")
            n += 1
    return n


def generate(cfg: Config) -> Dict[str, List[str]]:
    """Write the whole data set under cfg.out; returns {relative path: first lines}."""
    world = build_world(cfg)
    g = world.grammar
    corpora = sample_corpora(cfg, g)
    for sub in ("mono", "para", "cls"):
        os.makedirs(os.path.join(cfg.out, sub), exist_ok=True)
    written: Dict[str, List[str]] = {}
    counts: Dict[str, int] = {}

    def emit(rel: str, lines: List[str]) -> None:
        counts[rel] = write_lines(os.path.join(cfg.out, rel), lines)
        written[rel] = lines[:2]

    stats: Dict[str, Tuple[float, int, int, int]] = {}
    for lang in world.languages:
        for split in SPLITS:
            lines = [render_line(lang, s) for s in corpora.mono[(split, lang.code)]]
            emit(f"mono/{split}.{lang.code}", lines)
            if split == "train" and lines:
                lens = [len(x.split(" ")) for x in lines]
                types = len({tok for x in lines for tok in x.split(" ")})
                stats[lang.code] = (sum(lens) / len(lens), min(lens), max(lens), types)
    for split in SPLITS:
        rendered = {lg.code: [render_line(lg, s) for s in corpora.para[split]]
                    for lg in world.languages}
        for a, b in pairs(cfg.langs):
            emit(f"para/{split}.{a}-{b}.{a}", rendered[a])
            emit(f"para/{split}.{a}-{b}.{b}", rendered[b])
    for lang in world.languages:
        for split in SPLITS:
            emit(f"cls/{lang.code}.{split}", [render_cls(lang, ex) for ex in corpora.cls[split]])
    kinds: Dict[str, int] = {}
    for ex in corpora.cls["train"]:
        key = f"{ex.label}/{ex.kind}"
        kinds[key] = kinds.get(key, 0) + 1
    write_lexicon(os.path.join(cfg.out, "lexicon.tsv"), world)
    write_readme(os.path.join(cfg.out, "README.txt"), cfg, world, counts, written, stats, kinds)
    return written


def write_lexicon(path: str, world: World) -> None:
    """Gold dictionary: one concept per line, surface form in each language
    (compounds space-separated).  Useful to evaluate word alignment."""
    header = ["id", "category", "gloss", "domain"] + [lg.code for lg in world.languages]
    lines = ["\t".join(header)]
    for c in world.grammar.concepts:
        row = [str(c.cid), c.cat, c.gloss, str(c.domain)]
        row += [" ".join(lg.words[c.cid]) for lg in world.languages]
        lines.append("\t".join(row))
    write_lines(path, lines)


def anchor_tokens() -> List[str]:
    return [STOP, *NUMBERS, *NAMES]


def write_readme(path: str, cfg: Config, world: World, counts: Dict[str, int],
                 examples: Dict[str, List[str]], stats, kinds: Dict[str, int]) -> None:
    sizes = split_vocab(cfg.vocab_size)
    out = [
        "Toy languages sharing one latent grammar (generated by tools/toy_languages.py).",
        "",
        "Reproduce (output is byte-for-byte identical for the same arguments):",
        "  " + cfg.command(),
        "",
        "LANGUAGES",
    ]
    for lang in world.languages:
        line = f"  {lang.code}: typology {lang.typology.name} ({lang.typology.description}); "
        line += f"{lang.n_compounds} concepts realised as two tokens"
        if lang.code in cfg.cognates:
            parent, rate = cfg.cognates[lang.code]
            line += f"; related to {parent}: keeps its word for a share {rate} of the concepts"
        if lang.code in stats:
            mean, lo, hi, types = stats[lang.code]
            line += f"; mono train: {types} token types, length mean {mean:.1f} min {lo} max {hi}"
        out.append(line)
    out += [
        "",
        "LATENT GRAMMAR (shared by all languages)",
        "  Sentence -> Clause [Connective Clause] '.'",
        "  Clause   -> [PP] Subject [NEG] [PAST] Verb [Object] [Adverb]   (order shown for svo)",
        "  NP       -> Name | (Determiner | Number) Adjective{0,2} Noun [PLUR] [PP]",
        "  PP       -> Preposition NP",
        f"  Open-class concepts: {cfg.vocab_size} = {sizes['noun']} nouns, {sizes['verb']} verbs "
        f"({sizes['verb'] // 2} antonym pairs), {sizes['adj']} adjectives, {sizes['adv']} adverbs;",
        f"  Zipf-Mandelbrot frequencies 1/(rank+{ZIPF_OFFSET}); {cfg.n_domains} semantic domains "
        f"(topic per sentence, verb->object and noun->adjective preferences, p={P_IN_DOMAIN}).",
        f"  Closed classes: {len(DETERMINERS)} determiners, {len(PREPOSITIONS)} prepositions, "
        f"{len(CONNECTIVES)} connectives, markers {', '.join(GRAM_MARKERS)}.",
        f"  Latent length (tokens incl. '.') in [{MIN_LEN}, {MAX_LEN}]; compounds add tokens.",
        f"  Anchors, identical in every language: '.', {len(NUMBERS)} numbers "
        f"({' '.join(NUMBERS)}), {len(NAMES)} names ({' '.join(NAMES[:6])} ...).",
        "  All other surface words are pseudo-words unique to one language"
        + (" (or shared with a related language, see LANGUAGES)." if cfg.cognates else "."),
        "",
        "DATA",
        "  mono/{train,valid,test}.LG: independent latent samples per language (NOT translations).",
        "  para/{split}.A-B.{A,B}: line-aligned translations; the same latent sentences for all pairs.",
        "  Valid/test sentences (mono and para) never occur in any training file.",
        "  cls/LG.{train,valid,test}: premise<TAB>hypothesis<TAB>label, XNLI labels, balanced;",
        "    the same latent examples in every language (line i is the same example).",
        "  lexicon.tsv: gold concept -> surface dictionary for every language.",
        "",
        "CLASSIFICATION LABELS (defined on latent sentences; only the premise main clause is used)",
        "  entailment:    main clause weakened: VP modifiers (object adjectives/PP, adverb, PP)",
        "                 dropped if positive, added if negated; or only the subordinate clause dropped.",
        "  contradiction: weakened or identical main clause with negation flipped, or (positive",
        "                 premise only) with the verb replaced by its antonym.",
        "  neutral:       clause about a different subject (negation random), or the main clause",
        "                 strengthened (the opposite edit of entailment).",
        "  Train examples by label/construction: "
        + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())),
        "",
        "FILES (lines)",
    ]
    for rel in sorted(counts):
        out.append(f"  {rel}: {counts[rel]}")
    out += ["", "EXAMPLES (first lines)"]
    for rel in sorted(examples):
        for line in examples[rel]:
            out.append(f"  {rel}: {line}")
    write_lines(path, out)


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def parse_args(argv: Optional[Sequence[str]] = None) -> Config:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--langs", default="la,lb,lc", help="comma-separated language codes")
    p.add_argument("--typology", default="",
                   help="comma-separated word-order presets, one per language, from "
                        f"{','.join(TYPOLOGIES)} (default: cycle {','.join(DEFAULT_TYPOLOGY_CYCLE)})")
    p.add_argument("--n_mono", type=int, default=50000, help="monolingual train sentences per language")
    p.add_argument("--n_para", type=int, default=5000, help="parallel train sentences")
    p.add_argument("--n_valid", type=int, default=1000, help="mono and para valid sentences")
    p.add_argument("--n_test", type=int, default=1000, help="mono and para test sentences")
    p.add_argument("--n_cls_train", type=int, default=10000, help="classification train examples")
    p.add_argument("--n_cls_eval", type=int, default=1000, help="classification valid and test examples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vocab_size", type=int, default=1000, help="number of open-class concepts")
    p.add_argument("--n_domains", type=int, default=10, help="number of semantic domains")
    p.add_argument("--compound_rate", type=float, default=0.1,
                   help="fraction of open-class concepts realised as two tokens, per language")
    p.add_argument("--cognates", default="",
                   help="related languages, CHILD=PARENT:SHARE[,...]: CHILD keeps PARENT's word for that "
                        "share of the non-anchor concepts (e.g. lb=la:0.5)")
    a = p.parse_args(argv)
    try:
        cognates = {}
        for item in (x for x in a.cognates.split(",") if x):
            m = re.fullmatch(r"([^=]+)=([^:]+):([0-9.]+)", item)
            if not m:
                raise ValueError(f"--cognates {item!r}: expected CHILD=PARENT:SHARE")
            cognates[m.group(1)] = (m.group(2), float(m.group(3)))
        return Config(
            out=a.out, langs=[x for x in a.langs.split(",") if x],
            typologies=[x for x in a.typology.split(",") if x],
            n_mono=a.n_mono, n_para=a.n_para, n_valid=a.n_valid, n_test=a.n_test,
            n_cls_train=a.n_cls_train, n_cls_eval=a.n_cls_eval, seed=a.seed,
            vocab_size=a.vocab_size, n_domains=a.n_domains, compound_rate=a.compound_rate,
            cognates=cognates,
        )
    except ValueError as e:
        p.error(str(e))
        raise  # unreachable


def main(argv: Optional[Sequence[str]] = None) -> int:
    cfg = parse_args(argv)
    start = time.perf_counter()
    generate(cfg)
    elapsed = time.perf_counter() - start
    with open(os.path.join(cfg.out, "README.txt"), encoding="utf-8") as f:
        readme = f.read()
    summary = readme.split("\nCLASSIFICATION LABELS")[0]
    print(summary)
    print(f"Written to {cfg.out} in {elapsed:.1f}s (details: {os.path.join(cfg.out, 'README.txt')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
