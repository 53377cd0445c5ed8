"""The attention kernels of `MultiHeadAttention._attention`: the variable-length flash kernel for padded
batches on CUDA, the original's operations (evaluation and decoding, whose outputs must be the original's
bit for bit), and attention with the CPU's cheaper dropout on the weights (training on the CPU); the
masks they add to the scores.
"""
import importlib.util
import math
import os

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend

from .dropout import kept_mask

# Attention kernels for masked (padded) batches on CUDA: not cuDNN's, which torch prefers on Hopper GPUs but
# which builds a graph for each new shape, and sentence batches bring a new (rows, length) at almost every
# step (measured on an H200: padded TLM, MT and BT steps of the 12 x 1024 model took 0.46-0.55 s).
PADDED_ATTENTION_KERNELS = [SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def varlen_attn(*args):
    """torch's variable-length flash attention, imported at its first use: importing it loads
    torch._dynamo, which would add 1.5 s to the start of every script."""
    from torch.nn.attention.varlen import varlen_attn as kernel
    return kernel(*args)


def varlen_attention(q, k, v, kv_lengths):
    """Attention of q (bs, heads, qlen, d) over the first kv_lengths[i] keys of row i of k and v
    (bs, heads, klen, d), as SDPA with a key padding mask, but through the variable-length flash kernel,
    which skips the padding instead of computing and masking it. The rows are laid end to end without
    a copy: segment 2i pairs row i's queries with its keys, segment 2i + 1 no query with its padding."""
    bs, heads, qlen, d = q.shape
    klen = k.shape[2]
    cu_q = (torch.arange(bs + 1, device=q.device) * qlen).repeat_interleave(2)[1:]  # 0, qlen, qlen, 2 qlen...
    start = torch.arange(bs, device=q.device) * klen
    cu_k = torch.cat([torch.stack([start, start + kv_lengths], 1).flatten(), start.new_full((1,), bs * klen)])
    packed = [t.transpose(1, 2).reshape(-1, heads, d) for t in (q, k, v)]
    out = varlen_attn(*packed, cu_q.int(), cu_k.int(), qlen, klen)
    return out.view(bs, qlen, heads, d).transpose(1, 2)


# looked up without importing it (see `varlen_attn`)
VARLEN_MODULE_FOUND = importlib.util.find_spec("torch.nn.attention.varlen") is not None


def has_varlen_kernel():
    """Whether this torch has `torch.nn.attention.varlen` (2.9 and later) and XLM_VARLEN=0 is not set (the
    way back to masked attention, should the kernel fail on some GPU). No functools.cache: torch.compile
    warns at every function it traces through one."""
    return os.environ.get("XLM_VARLEN", "1") != "0" and VARLEN_MODULE_FOUND


def varlen_applies(q, dropout):
    """The flash kernel's conditions: a torch that has it, CUDA (Ampere or later), half precision, head
    size <= 256 and a multiple of 8, no dropout. Elsewhere (and on the CPU) attention masks the padding."""
    return (q.is_cuda and q.dtype in (torch.float16, torch.bfloat16) and dropout == 0 and q.shape[-1] % 8 == 0
            and q.shape[-1] <= 256 and has_varlen_kernel()
            and torch.cuda.get_device_capability(q.device) >= (8, 0))


# On the CPU, the original's attention (decoding's encoder, evaluation outside `free_roundings`) runs over
# slices of the batch whose scores take at most this many bytes: the scores of 32 pairs of 370 tokens
# (test sets have such) are 140 MB, memory that malloc must take fresh from the system, whose pages then
# fault in one by one (1 s of the 2.5 s that such a test set took, 48,000 faults). Each slice's matmuls
# and softmax give the same values, bit for bit.
ATTENTION_SLICE_BYTES = 16 * 2 ** 20


def original_attention(q, k, v, mask, is_causal):
    """Attention as the original computes it, operation for operation (the queries divided by the square
    root of their size, a matmul, -inf where not attending, a float32 softmax, a matmul), for evaluation
    and decoding: a fused kernel sums in another order, and a few rounding differences are enough to
    flip a close argmax, and with it a translation. Arguments as `MultiHeadAttention._attention`'s."""
    bs, heads, qlen, _ = q.shape
    rows = max(1, ATTENTION_SLICE_BYTES // (heads * qlen * k.shape[-2] * 4))
    if q.device.type == "cpu" and rows < bs:
        def rows_of(t, i):
            return t if t is None or t.shape[0] == 1 else t[i:i + rows]
        return torch.cat([original_attention(q[i:i + rows], rows_of(k, i), rows_of(v, i), rows_of(mask, i), is_causal)
                          for i in range(0, bs, rows)])
    scores = torch.matmul(q / math.sqrt(q.shape[-1]), k.transpose(-2, -1))
    # the mask added where the original fills: x + 0 is x, so the values are its own
    scores = mask_scores_(scores, mask, is_causal)
    return torch.matmul(F.softmax(scores.float(), dim=-1).type_as(scores), v)


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
    kept, scale = kept_mask(weights.shape, p, weights.dtype)
    if kept is None:
        return weights.new_zeros((*weights.shape[:-1], v.shape[-1]))
    return (weights * kept @ v) * scale
