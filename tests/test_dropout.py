"""The CPU dropout (xlm/model/dropout.py): drop rate, expectation, gradient, and attention against SDPA."""
import math

import pytest
import torch
import torch.nn.functional as F

from xlm.model.attention import additive_mask, attention_with_dropout
from xlm.model.dropout import dropout


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
def test_drop_rate_and_scale(p):
    torch.manual_seed(0)
    n = 1_000_003  # not a multiple of 4: the last 64-bit draw is partly used
    y = dropout(torch.ones(n), p, True)
    rate = round(p * 65536) / 65536
    dropped = (y == 0).double().mean().item()
    assert abs(dropped - p) < 5 * math.sqrt(p * (1 - p) / n)  # binomial: 5 standard deviations
    assert torch.allclose(y[y != 0], torch.tensor(1 / (1 - rate)))
    assert abs(y.double().mean().item() - 1) < 5 * math.sqrt(p / (1 - p) / n)


def test_lanes_independent():
    """Each of the four 16-bit lanes of a draw drops at the same rate, and neighbours do not co-vary."""
    torch.manual_seed(1)
    kept = (dropout(torch.ones(400_000, 4), 0.5, True) != 0).double()
    assert torch.allclose(kept.mean(0), torch.full((4,), 0.5, dtype=torch.double), atol=0.005)
    corr = torch.corrcoef(kept.t())
    assert (corr - torch.eye(4, dtype=torch.double)).abs().max() < 0.01


def test_gradient_is_the_mask_and_seeded():
    x = torch.randn(64, 33, requires_grad=True)
    torch.manual_seed(2)
    y = dropout(x, 0.2, True)
    y.sum().backward()
    torch.manual_seed(2)
    again = dropout(x.detach(), 0.2, True)
    assert torch.equal(y.detach(), again)
    assert torch.allclose(x.grad * x.detach(), y.detach(), atol=1e-6)


def test_eval_and_zero_are_identity():
    x = torch.randn(5, 7)
    assert dropout(x, 0.1, False) is x
    assert torch.equal(dropout(x, 0.0, True), x)
    assert torch.equal(dropout(x, 1.0, True), torch.zeros_like(x))


def test_bfloat16():
    y = dropout(torch.ones(10_000, dtype=torch.bfloat16), 0.1, True)
    assert y.dtype == torch.bfloat16 and 0.08 < (y == 0).float().mean() < 0.12


@pytest.mark.parametrize("causal", [False, True])
def test_attention_without_drops_is_sdpa(causal):
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, 4, 9, 16, generator=g) for _ in range(3))
    mask = None if causal else (torch.arange(9) < torch.tensor([9, 5])[:, None])[:, None, None, :]
    ours = attention_with_dropout(q, k, v, mask, causal, 1e-9)  # rounds to no drop at all
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
    assert torch.allclose(ours, ref, atol=1e-6)


@pytest.mark.parametrize("shape", [(3, 1, 1, 7), (5, 7), (3, 1, 5, 7)])
def test_additive_mask_gives_the_fills_values(shape):
    """Scores plus the mask as 0 / -inf are the scores filled with -inf where the mask is False, bit for bit
    (evaluation and decoding must give the original's values, which fills), and so are their softmaxes;
    the gradient through the addition is the fill's wherever a key is attended."""
    g = torch.Generator().manual_seed(5)
    scores = torch.randn(3, 2, 5, 7, generator=g) * 30
    mask = torch.rand(shape, generator=g) < 0.6
    mask[..., 0] = True  # every row attends somewhere
    filled = scores.clone().requires_grad_()
    added = scores.clone().requires_grad_()
    by_fill = torch.softmax(filled.clone().masked_fill_(~mask, float("-inf")), -1)
    by_addition = torch.softmax(added.clone().add_(additive_mask(mask, scores.dtype)), -1)
    assert torch.equal(filled.masked_fill(~mask, float("-inf")), scores + additive_mask(mask, scores.dtype))
    assert torch.equal(by_fill, by_addition)
    grad = torch.randn(by_fill.shape, generator=g)
    by_fill.backward(grad), by_addition.backward(grad)
    assert torch.equal(filled.grad, added.grad)


def test_attention_drops_weights():
    """With dropout, each weight row is the softmax with ~p of its entries zeroed and the rest scaled."""
    torch.manual_seed(4)
    q, k = torch.randn(1, 1, 200, 8), torch.randn(1, 1, 300, 8)
    v = torch.eye(300)[None, None]  # the output is the weights themselves
    weights = attention_with_dropout(q, k, v, None, False, 0.25)
    softmax = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(8), -1)
    kept = weights != 0
    assert abs(kept.float().mean().item() - 0.75) < 0.01
    assert torch.allclose(weights[kept], softmax[kept] / 0.75, atol=1e-6)
