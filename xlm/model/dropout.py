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


def kept_mask(shape, p, dtype):
    """The mask of the elements kept, as 1 and 0 of dtype, and the scale of the kept ones; (None, None) when
    all are dropped. In x's dtype because multiplying by it is four times faster than a `where` on a
    boolean mask, or a product with one (the mixed dtypes take a slow loop)."""
    dropped = round(p * 65536)
    if dropped >= 65536:
        return None, None
    n = math.prod(shape)
    threshold = dropped - 32768  # of 16-bit draws uniform over -32768..32767
    if torch.compiler.is_compiling():  # torch's draws: they break the graph too (random_ is not traced), but
        # quietly, where reading the seed on the host warns at every dropout
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
    kept, scale = kept_mask(x.shape, p, x.dtype)
    if kept is None:
        return torch.zeros_like(x)
    return x * kept.mul_(scale)
