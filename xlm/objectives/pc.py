"""Parallel classification (PC, `--pc_steps`): is the second sentence a translation of the first?

As the original, each pair keeps its translation with probability 1/2 and otherwise takes another
sentence of the batch; the pair is read as `</s> x1 </s> x2 </s>` with continuous positions, and the
classifier is the word-embedding rows 8 and 9 (`<special4>` the weight, `<special5>`'s first value the
bias), so the task adds no parameter to the model.
"""
import torch
import torch.nn.functional as F

from ..model.embedder import sentence_vectors
from .lm import concat_pair

CLF_WEIGHT, CLF_BIAS = 8, 9


def pc_batch(first, lang1, second, lang2, generator):
    """(x, lengths, positions, langs, labels) from a batch of aligned pairs, on the CPU; labels are 1 for
    translations and 0 for a random other sentence of the batch."""
    bs = len(first.lengths)
    labels = torch.randint(2, (bs,), generator=generator)
    shift = torch.randint(1, bs, (bs,), generator=generator)
    partner = torch.where(labels == 1, torch.arange(bs), (torch.arange(bs) + shift) % bs)
    second = type(second)(second.x[partner], second.lengths[partner])
    x, lengths, positions, langs = concat_pair(first, lang1, second, lang2, reset_positions=False)
    return x, lengths, positions, langs, labels


def pc_loss(model, embeddings, x, lengths, positions, langs, labels):
    """Binary cross-entropy of the classifier on the first hidden state of each pair."""
    h = sentence_vectors(model, x, lengths, langs=langs, positions=positions)
    logits = F.linear(h, embeddings[CLF_WEIGHT].unsqueeze(0), embeddings[CLF_BIAS, 0])
    return F.binary_cross_entropy_with_logits(logits.view(-1), labels.to(logits.dtype))
