"""Sentence(-pair) classification data and scores for XNLI and the English GLUE tasks.

Files, as the original's prepare-xnli.sh / prepare-glue.sh write them under `--data_path`:
  eval/XNLI/{split}.s1.{lg}.pth, {split}.s2.{lg}.pth, {split}.label.{lg}   (train for one language)
  eval/{TASK}/{split}.s1.pth[, {split}.s2.pth], {split}.label               (s2 for pair tasks)
Metric names are the original's: `xnli_valid_fr_acc`; every GLUE classification task has `_acc`, `_f1`
and `_mc`, after the task's name in lower case (`valid_sst-2_acc`, `valid_mrpc_f1`, `valid_cola_mc`, ...),
STS-B `valid_sts-b_prs` / `_spr`; scores are percentages.
"""
import os
from dataclasses import dataclass

import numpy as np
import torch

from ..data.binarized import load_binarized
from ..data.datasets import Batch, BatchingOptions, ParallelDataset, SentenceDataset
from ..data.dictionary import EOS_INDEX, Dictionary
from ..data.loader import check_fits
from ..fileio import DataError, check_file, decode_utf8
from ..objectives.lm import concat_pair
from ..train.distributed import gather_to_master, own_share
from ..train.schedules import finite_number


@dataclass(frozen=True)
class Task:
    n_outputs: int      # classes, or 1 for a regression
    pair: bool          # two sentences (s1, s2) or one
    metrics: tuple      # what it is scored on; the first selects the best model


GLUE = ("acc", "f1", "mc")  # the original scores every GLUE classification task on all three
TASKS = {
    "MNLI-m": Task(3, True, GLUE), "MNLI-mm": Task(3, True, GLUE), "QQP": Task(2, True, GLUE),
    "QNLI": Task(2, True, GLUE), "SST-2": Task(2, False, GLUE), "CoLA": Task(2, False, GLUE),
    "MRPC": Task(2, True, GLUE), "RTE": Task(2, True, GLUE), "STS-B": Task(1, True, ("prs", "spr")),
    "WNLI": Task(2, True, GLUE), "AX_MNLI-m": Task(3, True, GLUE), "XNLI": Task(3, True, ("acc",)),
}
XNLI_LABELS = ("contradiction", "neutral", "entailment")
GLUE_CLASSIFICATION = [name for name, task in TASKS.items() if task.n_outputs > 1 and name != "XNLI"]


# ----------------------------------------------------------------------------- scores

def accuracy(pred, gold):
    # 100 * right / total, in the original's order of operations: the same float (a mean first would
    # log 79.60000000000001 where the original logs 79.6)
    return 100.0 * int(np.sum(pred == gold)) / len(gold)


def f1(pred, gold, n_classes=2):
    """F1 as the original scores it: of the class of id 1 with two classes; micro-averaged with more, which
    for one label per example is the accuracy."""
    if n_classes != 2:
        return accuracy(pred, gold)
    tp = float(np.sum((pred == 1) & (gold == 1)))
    fp, fn = float(np.sum((pred == 1) & (gold != 1))), float(np.sum((pred != 1) & (gold == 1)))
    return 100.0 * 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def matthews(pred, gold):
    """The Matthews correlation of any number of classes (Gorodkin's R_K, which is the usual one for two)."""
    classes = np.union1d(pred, gold)
    predicted = np.array([np.sum(pred == k) for k in classes], dtype=np.float64)
    true = np.array([np.sum(gold == k) for k in classes], dtype=np.float64)
    n, correct = float(len(gold)), float(np.sum(pred == gold))
    denominator = np.sqrt((n * n - predicted @ predicted) * (n * n - true @ true))
    return 100.0 * (correct * n - predicted @ true) / denominator if denominator else 0.0


def pearson(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    a, b = a - a.mean(), b - b.mean()
    denominator = np.sqrt((a * a).sum() * (b * b).sum())
    return 100.0 * float((a * b).sum() / denominator) if denominator else 0.0


def _ranks(a):
    """Ranks 1..n, ties sharing their mean rank (as Spearman's correlation needs)."""
    a = np.asarray(a)
    order = np.argsort(a, kind="mergesort")
    ranks = np.empty(len(a), dtype=np.float64)
    ranks[order] = np.arange(1, len(a) + 1)
    values, inverse = np.unique(a, return_inverse=True)
    sums = np.bincount(inverse, weights=ranks)
    return (sums / np.bincount(inverse))[inverse]


def spearman(a, b):
    return pearson(_ranks(a), _ranks(b))


def task_scores(task_name, outputs, gold, prefix):
    """{prefix_metric: value} from the classifier outputs (n, n_outputs) and the gold labels."""
    task = TASKS[task_name]
    if task.n_outputs == 1:
        pred = outputs[:, 0]
        return {f"{prefix}_prs": pearson(pred, gold), f"{prefix}_spr": spearman(pred, gold)}
    pred = outputs.argmax(1)
    functions = {"acc": accuracy, "f1": lambda p, g: f1(p, g, task.n_outputs), "mc": matthews}
    return {f"{prefix}_{m}": functions[m](pred, gold) for m in task.metrics}


# ----------------------------------------------------------------------------- data

@dataclass
class LabelledSplit:
    """One split of one task (and language): sentences (pairs) and gold labels."""
    dataset: object           # ParallelDataset (pairs) or SentenceDataset
    labels: np.ndarray        # int64 class ids, float32 scores (regression), or None (unlabelled test)
    path: str = ""

    def batch(self, key, lang_id=None, max_len=0):
        """(x, lengths, langs, indices) of the examples `key`. Pairs are `</s> s1 </s> s2 </s>` with
        continuous positions, as the original feeds them; with max_len, each sentence is cut first."""
        sides = self.dataset.collate(key)
        sides = [truncate(b, max_len) for b in (sides if isinstance(sides, tuple) else (sides,))]
        if len(sides) == 2:
            x, lengths, _, _ = concat_pair(sides[0], 0, sides[1], 0, reset_positions=False)
        else:
            x, lengths = sides[0].x, sides[0].lengths
        langs = torch.full_like(x, lang_id) if lang_id is not None else None
        return x, lengths, langs, self.dataset.indices[key]

    def check_fits(self, n_positions, max_len=0):
        """Refuse now, naming it, an example the model's positions cannot hold (in training, each sentence
        cut to max_len first, as `batch`; whole in evaluation, as the original evaluates): it stopped the run
        in an embedding lookup when read, after an epoch's training for a valid one."""
        pair = isinstance(self.dataset, ParallelDataset)
        corpora = [self.dataset.corpus1, self.dataset.corpus2] if pair else [self.dataset.corpus]
        check_fits(corpora, self.dataset.indices, n_positions, joined=pair, max_len=max_len,
                   note=f" (cut to --max_len {max_len})" if max_len > 0 else "")


@torch.no_grad()
def predict(model, data, lang_id, info, autocast, check=None):
    """The outputs (n, n_outputs) of `model` on a LabelledSplit, in sentence order, on rank 0 (None on
    the other ranks): each rank of `info` runs batches i ≡ rank (mod world size), calling `check` before
    each (own_share)."""
    outputs, order = [], []
    for key in own_share(data.dataset.batches(None), info, check):
        x, lengths, langs, indices = data.batch(key, lang_id)
        with autocast:
            out = model(x.to(info.device), lengths.to(info.device), None if langs is None else langs.to(info.device))
        outputs.append(out.float().cpu().numpy())
        order.append(indices)
    shares = gather_to_master((outputs, order), info)
    if not info.is_master:
        return None
    outputs = [o for share, _ in shares for o in share]
    order = np.concatenate([i for _, share in shares for i in share])
    return np.concatenate(outputs)[np.argsort(order)]


def label_lines(path):
    """A .label file's lines without their trailing spaces and tabs, as the original reads them."""
    check_file(path)
    with open(path, "rb") as f:
        return [line.rstrip() for line in decode_utf8(f.read(), path).splitlines()]


def class_names(paths, task_name):
    """A GLUE classification task's labels in sorted order, which gives their ids, from the label files of
    all its splits: a training set may lack a class (a sample of it), where the original, numbering each
    split's own labels, gave a class one id in training and another in evaluation. QQP's rows without a
    label are the first class, as in the original."""
    names, n_classes = set(), TASKS[task_name].n_outputs
    for path in paths:
        for line_no, label in enumerate(label_lines(path), 1):
            if label in names or (label == "" and task_name == "QQP"):
                continue
            if len(names) == n_classes:
                raise DataError(f"{path}, line {line_no}: unknown label {label!r} ({task_name} has {n_classes} "
                                f"classes, and the labels before it are {', '.join(map(repr, sorted(names)))})")
            names.add(label)
    return tuple(sorted(names))


def read_labels(path, task_name, label_set=None):
    """Labels of a `.label` file: XNLI names, GLUE strings (ids in `label_set`'s order, by default the
    file's own sorted labels) or STS-B scores. Returns (labels, label_set)."""
    lines = label_lines(path)
    if task_name == "STS-B":
        scores = [finite_number(text) for text in lines]  # nan or 1e999 would make every loss nan, silently
        for line_no, (score, text) in enumerate(zip(scores, lines), 1):
            if score is None or not 0 <= score <= 5:  # the original asserts the range
                raise DataError(f"{path}:{line_no}: STS-B labels are similarity scores from 0 to 5, got {text!r}")
        return np.array(scores, dtype=np.float32), None
    if task_name == "XNLI":
        label_set = XNLI_LABELS
    elif label_set is None:
        label_set = class_names([path], task_name)
    ids = {label: i for i, label in enumerate(label_set)}
    if task_name == "QQP":
        ids.setdefault("", 0)
    for n, label in enumerate(lines, 1):
        if label not in ids:
            raise DataError(f"{path}, line {n}: unknown label '{label}' (expected one of {', '.join(label_set)})")
    return np.array([ids[label] for label in lines], dtype=np.int64), label_set


class TaskData:
    """Reads the binarized sentences of a task and checks them against the model's vocabulary."""

    def __init__(self, data_path, model_dico, max_vocab=-1, min_count=0):
        self.data_path, self.model_dico = data_path, model_dico
        self.max_vocab, self.min_count = max_vocab, min_count
        self.accepted = None  # the (untruncated) vocabulary of the files already checked

    def corpus(self, path):
        corpus = load_binarized(path)
        if self.accepted is not None and corpus.dico == self.accepted:
            return corpus
        dico = corpus.dico
        full = Dictionary(dict(dico.id2word), dict(dico.word2id), dict(dico.counts))
        dico.max_vocab(self.max_vocab)
        dico.min_count(self.min_count)
        if dico != self.model_dico:
            i, in_data, in_model = dico.first_difference(self.model_dico)
            raise DataError(f"{path}: binarized with a vocabulary of {len(full)} words ({len(dico)} after --max_vocab "
                            f"{self.max_vocab} / --min_count {self.min_count}) that is not the model's "
                            f"({len(self.model_dico)} words; id {i} is "
                            f"{'absent' if in_data is None else repr(in_data)} in the data, "
                            f"{'absent' if in_model is None else repr(in_model)} in the model): binarize with the "
                            "model's vocabulary and pass the --max_vocab / --min_count of its pretraining")
        self.accepted = full
        return corpus

    def split(self, task_name, split, lang=None, batching=None, label_set=None, file_split=None):
        """A LabelledSplit; `file_split` reads another split's files (--debug_train)."""
        task, name = TASKS[task_name], file_split or split
        folder = os.path.join(self.data_path, "eval", task_name)
        suffix = f".{lang}" if lang else ""
        s1 = self.corpus(os.path.join(folder, f"{name}.s1{suffix}.pth"))
        batching = batching or BatchingOptions(group_by_size=False)
        if task.pair:
            s2 = self.corpus(os.path.join(folder, f"{name}.s2{suffix}.pth"))
            dataset = ParallelDataset(s1, s2, batching, n_words=len(self.model_dico), keep_empty=True)
        else:
            dataset = SentenceDataset(s1, batching, n_words=len(self.model_dico))
        label_path = os.path.join(folder, f"{name}.label{suffix}")
        labels = None
        if os.path.exists(label_path):
            if label_set is None and task_name in GLUE_CLASSIFICATION:
                label_set = class_names(self.label_files(task_name, lang), task_name)
            labels, label_set = read_labels(label_path, task_name, label_set)
            if len(labels) != len(s1):
                raise DataError(f"{label_path}: {len(labels)} labels for {len(s1)} sentences in {s1.path}")
        elif split != "test":
            raise DataError(f"missing labels: {label_path}")
        return LabelledSplit(dataset, labels, s1.path), label_set

    def check_labels(self, task_name, lang=None, splits=("train", "valid", "test")):
        """Read the label files of a task's splits (in a language) as the splits will: a bad label is
        named now, not when the task's turn comes after others have trained. A GLUE classification task's
        classes come from all its label files at once, which finds any label too many."""
        if task_name in GLUE_CLASSIFICATION:
            class_names(self.label_files(task_name, lang), task_name)
            return
        for path in self.label_files(task_name, lang, splits):
            read_labels(path, task_name)

    def label_files(self, task_name, lang=None, splits=("train", "valid", "test")):
        """The label files of a task's splits that exist."""
        folder, suffix = os.path.join(self.data_path, "eval", task_name), f".{lang}" if lang else ""
        paths = [os.path.join(folder, f"{split}.label{suffix}") for split in splits]
        return [path for path in paths if os.path.exists(path)]

    def missing_files(self, task_name, split, lang=None):
        """The files of a split that do not exist: sentences (s2 for pairs), and labels."""
        folder, suffix = os.path.join(self.data_path, "eval", task_name), f".{lang}" if lang else ""
        names = [f"{split}.s1{suffix}.pth", f"{split}.label{suffix}"]
        if TASKS[task_name].pair:
            names.insert(1, f"{split}.s2{suffix}.pth")
        return [os.path.join(folder, n) for n in names if not os.path.isfile(os.path.join(folder, n))]

    def has_split(self, task_name, split, lang=None):
        suffix = f".{lang}" if lang else ""
        return os.path.isfile(os.path.join(self.data_path, "eval", task_name, f"{split}.s1{suffix}.pth"))


def truncate(batch, max_len):
    """Keep the first max_len tokens of each row (EOS included), the last of them an EOS, as the original."""
    if max_len <= 0 or batch.lengths.max() <= max_len:
        return batch
    x = batch.x[:, :max_len].clone()
    x[batch.lengths > max_len, max_len - 1] = EOS_INDEX
    return Batch(x, batch.lengths.clamp(max=max_len))
