"""Dropout that is cheap on the CPU.

On the CPU, `F.dropout` draws one Mersenne-Twister number per element (`bernoulli_`): for the attention
weights of an MLM step that costs ten times their matmul, and dropout was about a third of a CPU step.
Here one 64-bit draw gives the masks of four elements (16 bits each), so an element is dropped with
probability round(p * 65536) / 65536 (0.1 becomes 0.100006) and the kept ones are scaled to keep the
expectation. CUDA keeps PyTorch's fused kernel, which has no such cost.
"""
import math

import torch
import torch.nn.functional as F


def dropout(x, p, training):
    if not training or p == 0 or x.device.type != "cpu":
        return F.dropout(x, p=p, training=training)
    dropped = round(p * 65536)
    if dropped >= 65536:
        return torch.zeros_like(x)
    bits = torch.empty((x.numel() + 3) // 4, dtype=torch.int64).random_(-2 ** 63, None)
    uniform16 = bits.view(torch.int16)[:x.numel()].view(x.shape)  # uniform over -32768..32767
    keep = (uniform16 >= dropped - 32768).to(x.dtype).mul_(65536 / (65536 - dropped))
    return x * keep


def attention_with_dropout(q, k, v, mask, is_causal, p):
    """Scaled dot-product attention with dropout on the weights, as `F.scaled_dot_product_attention`'s
    math path computes it on the CPU, with the dropout above. mask: True where attending."""
    scores = (q * (1 / math.sqrt(q.shape[-1]))) @ k.transpose(-1, -2)
    if is_causal:
        mask = torch.ones(scores.shape[-2:], dtype=torch.bool, device=q.device).tril()
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return dropout(weights, p, True) @ v
