"""Find and open the binarized corpora a training run needs in --data_path, under the original's names:
`{split}.{lg}.pth` (monolingual) and `{split}.{a}-{b}.{a|b}.pth` with a < b (parallel). As in the
original, a per-rank shard `train.{lg}.{local_rank}.pth`, when present, replaces `train.{lg}.pth` for
that rank (get-data-wiki.sh style data split for multi-GPU runs)."""
import os
from dataclasses import dataclass, field

import numpy as np

from ..fileio import DataError
from .binarized import load_binarized

SPLITS = ("train", "valid", "test")


@dataclass
class TrainingData:
    dico: object
    n_words: int                               # after --max_vocab / --min_count
    mono: dict = field(default_factory=dict)   # lang -> split -> corpus
    sharded: set = field(default_factory=set)  # languages whose train corpus is this rank's own shard
    para: dict = field(default_factory=dict)   # (a, b) with a < b -> split -> (corpus_a, corpus_b)


def needed_languages(params):
    """(monolingual languages, pairs with train data, pairs with only valid/test data)."""
    steps = params.clm_steps + params.mlm_steps
    mono = {l1 for l1, l2 in steps if l2 is None} | set(params.ae_steps) | {l1 for l1, _, _ in params.bt_steps}
    pairs = {tuple(sorted(s)) for s in [s for s in steps if s[1] is not None] + params.pc_steps + params.mt_steps}
    eval_pairs = {tuple(sorted((l2, l3))) for _, l2, l3 in params.bt_steps} - pairs
    return sorted(mono), sorted(pairs), sorted(eval_pairs)


def corpus_path(params, name, local_rank):
    """The file of corpus `name` (`train.en`, `valid.de-en.de`...): the valid split's with --debug_train, and
    for a monolingual train corpus of a run of several processes this rank's shard where there is one
    (local_rank None: one process, which reads the whole file, as the original)."""
    if params.debug_train and name.startswith("train."):
        name = name.replace("train.", "valid.", 1)
    shard = os.path.join(params.data_path, f"{name}.{local_rank}.pth")
    if local_rank is not None and name.startswith("train.") and name.count(".") == 1 and os.path.isfile(shard):
        return shard
    return os.path.join(params.data_path, name + ".pth")


def check_fits(corpora, indices, n_positions, joined=False, note="", max_len=0):
    """Sentences `indices` of the corpora (of a pair: line-aligned) that the model's positions cannot hold
    stop the run now, named, not when the evaluation or a training step reads them: each with its two
    </s>, or with joined, a pair as one sequence of continuous positions, `</s> x1 </s> x2 </s>` (PC,
    classification); with max_len, each sentence cut to that many positions first (fine-tuning's batches)."""
    if len(indices) == 0:
        return
    sides = [corpus.lengths[indices] + 2 for corpus in corpora]
    if max_len > 0:
        sides = [np.minimum(side, max_len) for side in sides]
    if joined:
        total = sides[0] + sides[1] - 1
        i = int(total.argmax())
        if total[i] > n_positions:
            raise DataError(f"{corpora[0].path}, {corpora[1].path}: pair {indices[i]} makes a sequence of "
                            f"{int(total[i])} positions with its three </s>, more than the model's {n_positions}{note}")
        return
    for corpus, side in zip(corpora, sides):
        i = int(side.argmax())
        if side[i] > n_positions:
            raise DataError(f"{corpus.path}: sentence {indices[i]} has {int(corpus.lengths[indices[i]])} tokens, "
                            f"more than the {n_positions - 2} that the model's {n_positions} positions hold with the "
                            f"two </s>{note}")


def load_training_data(params, logger=None, local_rank=None):
    mono, pairs, eval_pairs = needed_languages(params)
    splits = ("valid", "test") if params.eval_only else SPLITS
    mono_paths = {(lg, s): corpus_path(params, f"{s}.{lg}", local_rank) for lg in mono for s in splits}
    para_paths = {((a, b), s): [corpus_path(params, f"{s}.{a}-{b}.{lg}", local_rank) for lg in (a, b)]
                  for a, b in pairs for s in splits}
    para_paths.update({((a, b), s): [corpus_path(params, f"{s}.{a}-{b}.{lg}", local_rank) for lg in (a, b)]
                       for a, b in eval_pairs for s in ("valid", "test")})
    paths = list(mono_paths.values()) + [path for two in para_paths.values() for path in two]
    missing = list(dict.fromkeys(path for path in paths if not os.path.isfile(path)))  # en-en names them twice
    if missing:
        raise DataError(f"missing data files: {', '.join(missing)}")
    first = []  # the first corpus read: its vocabulary is every other's

    def load(path):
        corpus = load_binarized(path)
        if not first:
            first.append(corpus)
        elif corpus.dico != first[0].dico:
            raise DataError(f"{corpus.path} and {first[0].path} were binarized with different vocabularies")
        if logger:
            logger.info("%s: %i sentences, %i words", corpus.path, len(corpus), corpus.n_words)
        return corpus

    data = TrainingData(None, 0)
    for (lg, split), path in mono_paths.items():
        data.mono.setdefault(lg, {})[split] = load(path)
        if local_rank is not None and path.endswith(f".{local_rank}.pth"):
            data.sharded.add(lg)
    for (pair, split), two in para_paths.items():
        data.para.setdefault(pair, {})[split] = tuple(load(path) for path in two)
    dico = first[0].dico
    full = len(dico)
    dico.max_vocab(params.max_vocab)
    dico.min_count(params.min_count)
    data.dico, data.n_words = dico, len(dico)
    if logger and data.n_words < full:
        logger.info("Vocabulary restricted to %i of %i words; the others read as <unk>", data.n_words, full)
    return data
