"""Language-model objectives as functions of a batch: CLM, MLM and TLM (MLM on a parallel pair).

Batches are batch-first (bs, slen). Masks are drawn on the CPU from an explicit torch.Generator, so a
run's randomness is in state that a checkpoint saves and a resumed run restores.
"""
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..data.dictionary import MASK_INDEX, PAD_INDEX


@dataclass
class MaskingConfig:
    word_pred: float = 0.15
    pred_probs: tuple = (0.8, 0.1, 0.1)   # mask, keep, random
    n_words: int = 0
    sample_alpha: float = 0.0
    mask_scores: torch.Tensor = None      # max(count, 1) ** -sample_alpha, 0 for count 0 (specials)

    @classmethod
    def from_params(cls, params, dico, n_words):
        scores = None
        if params.sample_alpha > 0:
            counts = np.array([dico.counts[dico[i]] for i in range(n_words)], dtype=np.float64)
            scores = np.maximum(counts, 1) ** -params.sample_alpha
            scores[counts == 0] = 0  # the special tokens, and as in the original any word of count 0
            scores = torch.from_numpy(scores)
        return cls(params.word_pred, (params.word_mask, params.word_keep, params.word_rand), n_words,
                   params.sample_alpha, scores)


def mask_for_training(x, lengths, cfg, generator):
    """BERT masking of x (bs, slen) on the CPU. Returns (input, pred_mask, targets).

    Positions are chosen with probability word_pred (or, with sample_alpha, ceil(word_pred * slen * bs)
    of them drawn, weighted towards rare words), never padding nor the first token of a row. Chosen
    tokens become <special1> (the mask), stay, or become a random word with the probabilities of
    --word_mask_keep_rand. Targets are in row-major order over (bs, slen), the
    original's position-major over its (slen, bs): the loss, a mean, is the same."""
    bs, slen = x.shape
    within = torch.arange(slen)[None, :] < lengths[:, None]
    valid = within.clone()
    valid[:, 0] = False
    if cfg.sample_alpha == 0:
        pred_mask = (torch.rand(bs, slen, generator=generator) <= cfg.word_pred) & valid
    else:
        # as the original: drawn among all tokens but padding, then the first of each row left out (a stream's
        # row starts with a word, which may be drawn: fewer than n are predicted then)
        weights = cfg.mask_scores[x.flatten()] * within.flatten()
        n = min(math.ceil(cfg.word_pred * slen * bs), int((weights > 0).sum()))
        pred_mask = torch.zeros(bs * slen, dtype=torch.bool)
        if n > 0:
            pred_mask[torch.multinomial(weights, n, replacement=False, generator=generator)] = True
        pred_mask = pred_mask.view(bs, slen) & valid
    if not pred_mask.any():  # a tiny batch may draw nothing: predict one token rather than divide by zero
        rows, cols = valid.nonzero(as_tuple=True)
        i = int(torch.randint(len(rows), (1,), generator=generator))
        pred_mask[rows[i], cols[i]] = True
    y = x[pred_mask]
    action = torch.multinomial(torch.tensor(cfg.pred_probs), len(y), replacement=True, generator=generator)
    random_words = torch.randint(cfg.n_words, (len(y),), generator=generator)
    replaced = torch.where(action == 0, torch.full_like(y, MASK_INDEX), torch.where(action == 1, y, random_words))
    x = x.clone()
    x[pred_mask] = replaced
    return x, pred_mask, y


def mask_for_eval(x, lengths, word_pred, rng):
    """Deterministic evaluation masking: positions with probability word_pred (never the first token
    of a row nor its final </s> and padding), at least one per row, all replaced by the mask.

    rng (numpy RandomState) is drawn from in the original's order, which is for its (slen, bs)
    batch: the same batch and the same rng state mask the same tokens as the original."""
    bs, slen = x.shape
    pred_mask = torch.from_numpy(np.ascontiguousarray((rng.rand(slen, bs) <= word_pred).T))
    pred_mask[:, 0] = False
    pred_mask &= torch.arange(slen)[None, :] < (lengths[:, None] - 1)
    for i in (~pred_mask.any(1) & (lengths > 2)).nonzero().flatten().tolist():  # rows in order, as the original
        pred_mask[i, rng.randint(1, int(lengths[i]) - 1)] = True
    y = x[pred_mask]
    x = x.clone()
    x[pred_mask] = MASK_INDEX
    return x, pred_mask, y


def concat_pair(b1, lang1, b2, lang2, reset_positions=True):
    """Concatenate the sentences of two batches row by row: `</s> x1 </s> </s> x2 </s>` with positions
    restarting at 0 on the second side (TLM), or with reset_positions=False `</s> x1 </s> x2 </s>`
    sharing the middle </s> and continuous positions. Each side keeps its language id."""
    len1 = b1.lengths - (0 if reset_positions else 1)
    lengths = len1 + b2.lengths
    bs, slen = len(lengths), int(lengths.max())
    t = torch.arange(slen)[None, :].expand(bs, slen)
    first = t < len1[:, None]
    second_pos = (t - len1[:, None]).clamp(0, b2.x.shape[1] - 1)
    x1 = F.pad(b1.x, (0, max(slen - b1.x.shape[1], 0)), value=PAD_INDEX)[:, :slen]
    x = torch.where(first, x1, b2.x.gather(1, second_pos))
    x = torch.where(t < lengths[:, None], x, torch.full_like(x, PAD_INDEX))
    positions = torch.where(first, t, t - len1[:, None]) if reset_positions else t.clone()
    langs = torch.where(first, torch.full_like(x, lang1), torch.full_like(x, lang2))
    return x, lengths, positions, langs


def clm_targets(x, lengths, context_size=0):
    """Position t < length - 1 (and t >= context_size) predicts token t + 1; the last position never
    predicts, so the mask applies to the hidden states as they are."""
    pred_mask = torch.arange(x.shape[1], device=x.device)[None, :] < (lengths[:, None] - 1)
    if context_size:
        pred_mask[:, :context_size] = False
    return pred_mask, x[:, 1:][pred_mask[:, :-1]]


def lm_scores(model, x, lengths, langs, positions, pred_mask, y, causal, every_position=False):
    """(sum of cross-entropy, number of predictions, number correct), for evaluation. every_position: the
    last layer computes every position, not only the predicted ones (for the memories' statistics)."""
    if every_position:
        h = model(x, lengths, langs=langs, positions=positions, causal=causal)[pred_mask]
    else:
        h = model(x, lengths, langs=langs, positions=positions, causal=causal, pred_mask=pred_mask)
    scores = model.get_scores(h).float()
    loss = F.nll_loss(scores, y, reduction="sum") if model.config.asm else F.cross_entropy(scores, y, reduction="sum")
    return loss.item(), len(y), (scores.argmax(-1) == y).sum().item()
