"""Linear layers through oneDNN in CPU training (xlm/model/linear.py): the same values and gradients as
F.linear within float32 rounding; F.linear itself, bit for bit, without gradients (evaluation, decoding)."""
import pytest
import torch
import torch.nn.functional as F

import xlm.model.linear as linear_module
from xlm.model.linear import Linear, linear, mkl_k_blocks, free_roundings, onednn_chosen, weights_packed

pytestmark = pytest.mark.usefixtures("onednn")


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
@pytest.mark.parametrize("width", [136, 520])  # 520: an output wide enough for the weight gradient's other order
def test_training_matches_f_linear(onednn_calls, bias, strided, width):
    torch.manual_seed(0)
    x = torch.randn(3, 7, 160)
    if strided:  # as the attention's context is, transposed
        x = torch.randn(3, 160, 7).transpose(1, 2)
    layer = Linear(160, width, bias=bias)
    weight = layer.weight.detach().clone().requires_grad_()
    b = layer.bias.detach().clone().requires_grad_() if bias else None
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    out = layer(x1)
    expected = F.linear(x2, weight, b)
    assert len(onednn_calls) == 1 and out.shape == expected.shape == (3, 7, width)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    grad = torch.randn_like(out)
    out.backward(grad)
    expected.backward(grad)
    assert len(onednn_calls) == 3  # the input's and the weight's gradients
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer.weight.grad, weight.grad, rtol=1e-5, atol=1e-5)
    if bias:
        torch.testing.assert_close(layer.bias.grad, b.grad, rtol=1e-5, atol=1e-5)


def test_the_weight_gradient_is_the_same_in_either_order():
    """A wide output's weight gradient is computed as (x^T grad)^T, which oneDNN does faster: the same bits."""
    torch.manual_seed(0)
    for out, width in ((1000, 128), (136, 160)):
        grad, x = torch.randn(96, out), torch.randn(96, width)
        expected = linear_module._onednn_linear(grad.t(), x.t())
        gradient = linear_module._weight_gradient(grad, x)
        assert gradient.is_contiguous() and torch.equal(gradient, expected)
        assert torch.equal(linear_module._onednn_linear(x.t(), grad.t()).t(), expected)


def test_without_gradient_it_is_f_linear_bit_for_bit(onednn_calls):
    """Evaluation and decoding compute what the original computes."""
    torch.manual_seed(1)
    layer, x = Linear(160, 136), torch.randn(5, 160)
    with torch.no_grad():
        assert torch.equal(layer(x), F.linear(x, layer.weight, layer.bias))
    assert torch.equal(linear(x, layer.weight.detach()), F.linear(x, layer.weight.detach()))  # nothing needs a gradient
    assert not onednn_calls


@torch.no_grad()
def test_larger_matmuls_without_gradient_are_f_linear_bit_for_bit_through_onednn(onednn_calls, threads):
    """Decoding's matmuls give float32 F.linear's values bit for bit (MKL's, the original's), through
    oneDNN in MKL's order where `mkl_k_blocks` finds it (on the project's Zen 5, every width), for any
    number of rows (some small ones keep F.linear), with and without bias, weights packed or not."""
    g = torch.Generator().manual_seed(4)
    for width, out in ((160, 1000), (256, 520), (1024, 256)):
        layer = Linear(width, out)
        x = torch.randn(333, width, generator=g)
        for packed in (False, True):
            with weights_packed() if packed else torch.no_grad():
                for m in [*range(1, 70), 97, 160, 333]:
                    for _ in range(2):  # a shape's first call returns F.linear's values, checked against oneDNN's
                        assert torch.equal(layer(x[:m]), F.linear(x[:m], layer.weight, layer.bias)), (width, m)
                        assert torch.equal(linear(x[:m], layer.weight), F.linear(x[:m], layer.weight)), (width, m)
        if mkl_k_blocks(width, threads) is None:
            pytest.skip(f"MKL's order is not found on this CPU at width {width}: F.linear computed it")
        assert onednn_calls
        onednn_calls.clear()


@torch.no_grad()
def test_a_shape_whose_first_call_differs_keeps_f_linear(onednn_calls, monkeypatch):
    """`linear` checks the first call of each shape against F.linear: where oneDNN in MKL's order gave
    other values (another CPU's MKL taking other kernels at some size), that shape keeps F.linear."""
    layer, x = Linear(256, 1000), torch.randn(300, 256)
    bounds = linear_module.mkl_order_blocks(x, layer.weight)  # found first: finding it calls oneDNN too
    if bounds is None:
        pytest.skip("MKL's order is not found on this CPU: F.linear computes it")
    onednn_calls.clear()
    monkeypatch.setattr(linear_module, "_checked_shapes", {})
    blockwise = linear_module._blockwise_linear
    monkeypatch.setattr(linear_module, "_blockwise_linear", lambda *a: blockwise(*a).add_(1e-3))
    for _ in range(3):
        assert torch.equal(layer(x), F.linear(x, layer.weight, layer.bias))
    assert len(onednn_calls) == len(bounds) - 1  # the first call's, a call per block
    assert linear_module.mkl_order_blocks(x, layer.weight) is None
    assert linear_module.mkl_order_blocks(x[:200], layer.weight) is not None  # another shape is checked anew


def test_weights_packed_packs_each_parameter_once(monkeypatch):
    """Inside `weights_packed` (decoding) each block of a parameter is reordered into oneDNN's layout at
    its first use and reused; a tensor made for one call is not kept; nothing is kept after."""
    torch.manual_seed(5)
    layer, x = Linear(256, 520), torch.randn(40, 256)
    with torch.no_grad():  # MKL's order found before counting: finding it reorders too
        blocks = linear_module.mkl_order_blocks(x, layer.weight)
    if blocks is None:
        pytest.skip("MKL's order is not found on this CPU: decoding calls F.linear")
    reorders = []
    reorder = torch.ops.mkldnn._reorder_linear_weight
    monkeypatch.setattr(torch.ops.mkldnn, "_reorder_linear_weight", lambda w: reorders.append(w) or reorder(w))
    with torch.no_grad(), weights_packed():
        for _ in range(3):
            assert torch.equal(layer(x), F.linear(x, layer.weight, layer.bias))
        assert len(reorders) == len(blocks) - 1
        with weights_packed():  # an inner context keeps the outer one's
            layer(x)
            temporary = layer.weight * 1
            for _ in range(2):
                linear(x, temporary)
        assert len(reorders) == len(blocks) - 1
    assert linear_module._packed_weights[0] is None


def test_back_translation_generates_through_onednn(onednn_calls):
    """Inside `free_roundings` (back-translation's generation in training) oneDNN computes
    what needs no gradient too, within rounding of F.linear; outside, F.linear again."""
    torch.manual_seed(2)
    layer, x = Linear(160, 136), torch.randn(2, 5, 160)
    with torch.no_grad():
        with free_roundings():
            out = layer(x)
        assert len(onednn_calls) == 1
        torch.testing.assert_close(out, F.linear(x, layer.weight, layer.bias), rtol=1e-5, atol=1e-5)
        assert torch.equal(layer(x), F.linear(x, layer.weight, layer.bias))
    assert len(onednn_calls) == 1


def test_decoding_packs_each_weight_once(monkeypatch):
    """weights_packed inside free_roundings (back-translation's generation) reorders each weight into
    oneDNN's layout at its first use and reuses it: the same values as the unpacked weight; none kept after."""
    reorders = []
    reorder = torch.ops.mkldnn._reorder_linear_weight
    monkeypatch.setattr(torch.ops.mkldnn, "_reorder_linear_weight", lambda w: reorders.append(w) or reorder(w))
    torch.manual_seed(3)
    layers, x = [Linear(160, 136), Linear(160, 520)], torch.randn(6, 160)
    with torch.no_grad():
        with free_roundings():
            expected = [layer(x) for layer in layers]
        with free_roundings(), weights_packed():
            for _ in range(3):
                assert all(torch.equal(layer(x), e) for layer, e in zip(layers, expected))
        assert [w.data_ptr() for w in reorders] == [layer.weight.data_ptr() for layer in layers]
        assert linear_module._packed_weights[0] is None


def test_autocast_float64_and_narrow_layers_keep_f_linear(onednn_calls):
    layer = Linear(128, 128)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert layer(torch.randn(4, 128)).dtype == torch.bfloat16
    layer.double()(torch.randn(4, 128, dtype=torch.float64))
    Linear(64, 8000)(torch.randn(4, 64))  # the sample's output layer: MKL is as fast at 64 dimensions
    assert not onednn_calls
    Linear(128, 8000)(torch.randn(4, 128))
    assert len(onednn_calls) == 1


def test_no_rows(onednn_calls):
    """oneDNN refuses an empty input: F.linear takes it."""
    layer, x = Linear(160, 136), torch.randn(0, 160, requires_grad=True)
    layer(x).sum().backward()
    assert x.grad.shape == (0, 160) and not layer.weight.grad.any() and not onednn_calls


def test_rows_are_padded_to_few_sizes():
    """oneDNN builds a kernel per shape: the rows go up to one of 8 sizes per power of two."""
    sizes = [linear_module.bucket_rows(n) for n in range(1, 5000)]
    assert all(n <= m <= n * 1.125 + 1 for n, m in zip(range(1, 5000), sizes))
    assert len(set(sizes[1024:2047])) == 8


@pytest.mark.parametrize("env,capability,vendor,chosen", [
    ("", "AVX512", "AuthenticAMD", True), ("", "AVX512", "GenuineIntel", False), ("", "AVX512", "", False),
    ("", "AVX2", "AuthenticAMD", False), ("0", "AVX512", "AuthenticAMD", False), ("1", "AVX2", "GenuineIntel", True),
    ("1", "DEFAULT", "", True)])
def test_chosen_by_the_cpu_unless_the_environment_says(env, capability, vendor, chosen, monkeypatch):
    """oneDNN on AMD's CPUs with AVX-512 (where MKL runs its AVX2 kernels), MKL on AVX2 alone, where it is
    the faster, and on Intel's, where it has AVX-512 kernels; XLM_ONEDNN=0/1 decides otherwise, anything
    else is an error naming it."""
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(linear_module, "cpu_vendor", lambda: vendor)
    monkeypatch.setenv("XLM_ONEDNN", env)
    monkeypatch.setattr(linear_module, "onednn_chosen", onednn_chosen)  # the real one, not the fixture's
    onednn_chosen.cache_clear()
    try:
        assert onednn_chosen() is chosen
        monkeypatch.setenv("XLM_ONEDNN", "yes")
        onednn_chosen.cache_clear()
        with pytest.raises(ValueError, match="XLM_ONEDNN"):
            onednn_chosen()
    finally:
        onednn_chosen.cache_clear()


@pytest.mark.parametrize("through_onednn", [True, False])
def test_the_loss_is_f_cross_entropy(through_onednn, monkeypatch):
    """`cross_entropy` in CPU training (the softmax in place, the log of its sum from its largest
    probability) against F.cross_entropy of F.linear: the loss and every gradient, with targets left out,
    columns at -inf (the vocabulary's padding), and logits far apart (a confident wrong prediction)."""
    if not through_onednn:
        monkeypatch.setattr(linear_module, "onednn_chosen", lambda: False)
    torch.manual_seed(0)
    x = torch.randn(37, 160)
    x[3] *= 40  # its logits spread over hundreds: exp of the smallest underflows
    y = torch.randint(0, 500, (37,))
    y[[0, 5, 9]] = linear_module.IGNORED
    weight = torch.randn(504, 160) / 10
    bias = torch.cat([torch.randn(500), torch.full((4,), -float("inf"))])
    inputs = [t.clone().requires_grad_() for t in (x, weight, bias)]
    expected_inputs = [t.clone().requires_grad_() for t in (x, weight, bias)]
    loss = linear_module.cross_entropy(*inputs, y)
    expected = F.cross_entropy(F.linear(*expected_inputs), y, ignore_index=linear_module.IGNORED)
    assert expected > 10  # the spread row's loss is large
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-5)
    (3 * loss).backward()
    (3 * expected).backward()
    for ours, theirs in zip(inputs, expected_inputs):
        assert torch.isfinite(ours.grad).all()
        torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-5, atol=1e-5)
