"""Find and open the binarized corpora a training run needs in --data_path, under the original's names:
`{split}.{lg}.pth` (monolingual) and `{split}.{a}-{b}.{a|b}.pth` with a < b (parallel). As in the
original, a per-rank shard `train.{lg}.{local_rank}.pth`, when present, replaces `train.{lg}.pth` for
that rank (get-data-wiki.sh style data split for multi-GPU runs)."""
import os
from dataclasses import dataclass, field

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


def load_training_data(params, logger=None, local_rank=0):
    mono, pairs, eval_pairs = needed_languages(params)
    splits = ("valid", "test") if params.eval_only else SPLITS
    names = [(f"{s}.{lg}", (lg, s)) for lg in mono for s in splits]
    names += [(f"{s}.{a}-{b}.{lg}", ((a, b), s, lg)) for a, b in pairs for s in splits for lg in (a, b)]
    names += [(f"{s}.{a}-{b}.{lg}", ((a, b), s, lg)) for a, b in eval_pairs for s in ("valid", "test")
              for lg in (a, b)]

    def path_of(name):
        file_name = name.replace("train.", "valid.", 1) if params.debug_train and name.startswith("train.") else name
        shard = os.path.join(params.data_path, f"{file_name}.{local_rank}.pth")
        if file_name.startswith("train.") and file_name.count(".") == 1 and os.path.isfile(shard):
            return shard
        return os.path.join(params.data_path, file_name + ".pth")

    missing = [path_of(n) for n, _ in names if not os.path.isfile(path_of(n))]
    if missing:
        raise DataError(f"missing data files: {', '.join(missing)}")
    data, dico, first = TrainingData(None, 0), None, None
    for name, key in names:
        corpus = load_binarized(path_of(name))
        if dico is None:
            dico, first = corpus.dico, corpus.path
        elif corpus.dico != dico:
            raise DataError(f"{corpus.path} and {first} were binarized with different vocabularies")
        if logger:
            logger.info("%s: %i sentences, %i words", corpus.path, len(corpus), corpus.n_words)
        if isinstance(key[0], str):
            data.mono.setdefault(key[0], {})[key[1]] = corpus
            if path_of(name).endswith(f".{local_rank}.pth"):
                data.sharded.add(key[0])
        else:
            pair, split, lg = key
            sides = data.para.setdefault(pair, {}).setdefault(split, {})
            sides[lg] = corpus
    for pair, splits_ in data.para.items():
        for split, sides in splits_.items():
            splits_[split] = (sides[pair[0]], sides[pair[1]])
    full = len(dico)
    dico.max_vocab(params.max_vocab)
    dico.min_count(params.min_count)
    data.dico, data.n_words = dico, len(dico)
    if logger and data.n_words < full:
        logger.info("Vocabulary restricted to %i of %i words; the others read as <unk>", data.n_words, full)
    return data
