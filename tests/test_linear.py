"""Linear layers through oneDNN in CPU training (xlm/model/linear.py): the same values and gradients as
F.linear within float32 rounding; F.linear itself, bit for bit, without gradients (evaluation, decoding)."""
import pytest
import torch
import torch.nn.functional as F

import xlm.model.linear as linear_module
from xlm.model.linear import Linear, has_onednn, linear

pytestmark = pytest.mark.skipif(not has_onednn(), reason="this torch has no oneDNN")


@pytest.fixture
def onednn_calls(monkeypatch):
    calls = []
    original = linear_module._onednn_linear

    def counted(*args):
        calls.append(args[0].shape)
        return original(*args)
    monkeypatch.setattr(linear_module, "_onednn_linear", counted)
    return calls


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("strided", [False, True])
def test_training_matches_f_linear(onednn_calls, bias, strided):
    torch.manual_seed(0)
    x = torch.randn(3, 7, 48)
    if strided:  # as the attention's context is, transposed
        x = torch.randn(3, 48, 7).transpose(1, 2)
    layer = Linear(48, 40, bias=bias)
    weight = layer.weight.detach().clone().requires_grad_()
    b = layer.bias.detach().clone().requires_grad_() if bias else None
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    out = layer(x1)
    expected = F.linear(x2, weight, b)
    assert len(onednn_calls) == 1 and out.shape == expected.shape == (3, 7, 40)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    grad = torch.randn_like(out)
    out.backward(grad)
    expected.backward(grad)
    assert len(onednn_calls) == 3  # the input's and the weight's gradients
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer.weight.grad, weight.grad, rtol=1e-5, atol=1e-5)
    if bias:
        torch.testing.assert_close(layer.bias.grad, b.grad, rtol=1e-5, atol=1e-5)


def test_without_gradient_it_is_f_linear_bit_for_bit(onednn_calls):
    """Evaluation and decoding compute what the original computes."""
    torch.manual_seed(1)
    layer, x = Linear(64, 33), torch.randn(5, 64)
    with torch.no_grad():
        assert torch.equal(layer(x), F.linear(x, layer.weight, layer.bias))
    assert torch.equal(linear(x, layer.weight.detach()), F.linear(x, layer.weight.detach()))  # nothing needs a gradient
    assert not onednn_calls


def test_autocast_and_float64_keep_f_linear(onednn_calls):
    layer = Linear(16, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert layer(torch.randn(4, 16)).dtype == torch.bfloat16
    layer.double()(torch.randn(4, 16, dtype=torch.float64))
    assert not onednn_calls


def test_can_be_turned_off(monkeypatch):
    has_onednn.cache_clear()
    monkeypatch.setenv("XLM_ONEDNN", "0")
    try:
        assert not has_onednn()
    finally:
        has_onednn.cache_clear()
