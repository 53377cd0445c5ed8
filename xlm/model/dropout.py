"""Dropout that is cheap on the CPU.

On the CPU, `F.dropout` draws one Mersenne-Twister number per element (`bernoulli_`): for the attention
weights of an MLM step that costs ten times their matmul, and dropout was about a third of a CPU step.
Here one 64-bit draw gives the masks of four elements (16 bits each), so an element is dropped with
probability round(p * 65536) / 65536 (0.1 becomes 0.100006) and the kept ones are scaled to keep the
expectation. The draws come from numpy's SFC64 generator, seeded at each call by one draw of torch's (so
`torch.manual_seed` and a checkpoint's random state still decide every mask), and numpy compares them
with the threshold: for an MLM step's attention weights (4.2 M elements, one thread, Zen 3) 2.0 ms of
draws against torch's Mersenne Twister's 6.1, 0.9 ms for the mask against 2.6 (torch compares 16-bit
integers element by element, and converts booleans to floats slowly, bytes fast). CUDA keeps PyTorch's
fused kernel, which has no such cost.
"""
import math

import numpy as np
import torch
import torch.nn.functional as F


def _kept(shape, p, dtype):
    """The mask of the elements kept, as 1 and 0 of dtype, and the scale of the kept ones; (None, None) when
    all are dropped. In x's dtype because multiplying by it is four times faster than a `where` on a
    boolean mask, or a product with one (the mixed dtypes take a slow loop)."""
    dropped = round(p * 65536)
    if dropped >= 65536:
        return None, None
    n = math.prod(shape)
    threshold = dropped - 32768  # of 16-bit draws uniform over -32768..32767
    if torch.compiler.is_compiling():  # torch's draws, as before: they break the graph too (random_ is not
        # traced), but quietly, where reading the seed on the host warns at every dropout
        bits = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-2 ** 63, None)
        kept = torch.ge(bits.view(torch.int16)[:n].view(shape), threshold, out=torch.empty(shape, dtype=dtype))
    else:
        seed = int(torch.empty((), dtype=torch.int64).random_())
        bits = np.random.SFC64(seed).random_raw((n + 3) // 4)
        kept_bytes = torch.from_numpy(np.greater_equal(bits.view(np.int16)[:n], np.int16(threshold)))
        kept = torch.empty(shape, dtype=dtype).copy_(kept_bytes.view(torch.uint8).view(shape))
    return kept, 65536 / (65536 - dropped)


def dropout(x, p, training):
    if not training or p == 0:  # what F.dropout returns then, without its call (decoding makes many)
        return x
    if x.device.type != "cpu":
        return F.dropout(x, p=p, training=training)
    kept, scale = _kept(x.shape, p, x.dtype)
    if kept is None:
        return torch.zeros_like(x)
    return x * kept.mul_(scale)


def additive_mask(mask, dtype):
    """The boolean mask (True where attending) as 0 and -inf of dtype, to add to the scores: the same values as
    a fill, but a fill through a broadcast boolean mask takes a slow loop (a TLM step's scores, 32 x 8 x 100
    x 100 under a (32, 1, 1, 100) mask: 2.7 ms against 0.37 for the addition), and in training its backward
    fills the gradient again (3.3 ms), where the softmax's backward already gives 0. The same values where
    the masked scores are finite, as they are: the padding's keys are zeros (`Packing.pad`) or the pad
    token's."""
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, float("-inf"))


def mask_scores_(scores, mask, is_causal):
    """Attention scores (..., qlen, klen) with -inf added in place where not attending: where the boolean
    mask is False, or, with is_causal, after each query's own position (the queries being the last qlen of
    the klen positions). In place: the matmul that made the scores needs its inputs for its backward, not
    its output, and a copy would be one more (bs, heads, qlen, klen) tensor per layer."""
    if is_causal:
        qlen, klen = scores.shape[-2:]
        mask = torch.ones(qlen, klen, dtype=torch.bool, device=scores.device).tril(klen - qlen)
    if mask is not None:
        scores.add_(additive_mask(mask, scores.dtype))
    return scores


def attention_with_dropout(q, k, v, mask, is_causal, p):
    """Scaled dot-product attention with dropout on the weights, as `F.scaled_dot_product_attention`'s
    math path computes it on the CPU, with the dropout above, whose scale is applied to the (smaller)
    output. mask: True where attending."""
    # k's copy in its own layout, read transposed by the matmul: the matmul would otherwise copy k^T, a
    # transposing copy 7x slower (an MLM step's keys, 32 x 8 x 128 x 32: 1.47 ms against 0.21)
    scores = (q * (1 / math.sqrt(q.shape[-1]))) @ k.contiguous().transpose(-1, -2)
    weights = torch.softmax(mask_scores_(scores, mask, is_causal), dim=-1)
    kept, scale = _kept(weights.shape, p, weights.dtype)
    if kept is None:
        return weights.new_zeros((*weights.shape[:-1], v.shape[-1]))
    return (weights * kept @ v) * scale
