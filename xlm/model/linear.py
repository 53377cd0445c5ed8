"""Linear layers whose training matmuls are fast on the CPU.

PyTorch's float32 `F.linear` on the CPU calls MKL's sgemm, which on the project's AMD EPYC (Zen 5) runs
at 40-70% of the speed of oneDNN's (also in torch's x86 wheels) on the same core: 89-102 against
128-238 GFLOP/s for an MLM step's shapes, one thread (bench/results/README.md). Training on the CPU in
float32 therefore computes the forward and backward matmuls of layers 128 or more wide through oneDNN,
and so does the generation of back-translation in training (`onednn_without_gradient`): its translations
come from weights that training has already rounded otherwise, and nothing compares them; and so does
the scoring of evaluation (perplexities and accuracies, which differ from the original's in the 7th digit
anyway: its sums run in another order). Decoding keeps `F.linear`, the original's operation, so that its
translations stay the original's bit for bit; so do CUDA, autocast and torch.compile (which has its own
CPU kernels). `XLM_ONEDNN=0` in the environment turns it off.
"""
import contextlib
import functools
import os

import torch
import torch.nn.functional as F
from torch import nn


@functools.cache
def has_onednn():
    """Whether this torch has oneDNN's linear op (x86 and Arm wheels), and XLM_ONEDNN=0 is not set."""
    if os.environ.get("XLM_ONEDNN", "1") == "0":
        return False
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def bucket_rows(n):
    """n rounded up to one of 8 sizes between each power of two and the next (at most 12.5% more):
    oneDNN builds a kernel for each new shape (0.4-11 ms, where the matmul takes 0.07-4 ms), and the
    rows of packed batches, predicted tokens and decoded sentences change at every step."""
    quantum = 1 << max(n.bit_length() - 4, 0)
    return -(-n // quantum) * quantum


def _onednn_linear(x, weight, bias=None):
    """x (n, in) @ weight (out, in)^T + bias, through oneDNN, n a bucket size; x and weight may be strided."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def _pad_rows(t, m):
    return t if len(t) == m else F.pad(t, (0, 0, 0, m - len(t)))


def _bucketed_linear(x, weight, bias=None):
    """(x's rows padded to their bucket with zeros, x's output (..., out))"""
    rows = x.reshape(-1, x.shape[-1])
    padded = _pad_rows(rows, bucket_rows(len(rows)))
    return padded, _onednn_linear(padded, weight, bias)[:len(rows)].view(*x.shape[:-1], weight.shape[0])


WIDE_OUTPUT = 2  # outputs at least this many times wider than their input: the weight gradient's other order


def _weight_gradient(grad, x):
    """grad^T @ x, (out, in), from grad (n, out) and x (n, in). oneDNN copies a transposed input into a
    contiguous one, where it reads a transposed weight in its packing pass at no extra cost: so where the
    output is the wider (the vocabulary's 8,000-95,000 words against 128-1,024 dimensions, the FFN's first
    layer), (x^T @ grad)^T, which transposes x, the narrower, is computed instead: the same values bit for
    bit, 1.1-2.7x faster on a Zen 5, one thread (`python -m bench.cpu_matmul`: 8,056 x 128 on 960 / 4,096
    rows 1.5x / 2.7x, 8,000 x 256 1.2x / 2.1x, 1,024 x 256 1.1x / 1.3x; out <= in 0.8-1.2x, kept as it
    was), 1.2-4.4x with two threads."""
    if grad.shape[1] >= WIDE_OUTPUT * x.shape[1]:
        return _onednn_linear(x.t(), grad.t()).t().contiguous()
    return _onednn_linear(grad.t(), x.t())


class _OneDNNLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        padded, out = _bucketed_linear(x, weight, bias)
        ctx.save_for_backward(padded, weight)
        ctx.has_bias, ctx.in_shape = bias is not None, x.shape
        return out

    @staticmethod
    def backward(ctx, grad):
        padded, weight = ctx.saved_tensors
        grad = grad.reshape(-1, weight.shape[0])
        grad_x = grad_weight = grad_bias = None
        padded_grad = _pad_rows(grad, len(padded))  # zero rows: no term in grad^T @ x
        if ctx.needs_input_grad[0]:
            grad_x = _onednn_linear(padded_grad, weight.t())[:len(grad)].view(ctx.in_shape)   # grad @ weight
        if ctx.needs_input_grad[1]:
            grad_weight = _weight_gradient(padded_grad, padded)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad.sum(0)
        return grad_x, grad_weight, grad_bias


# Narrower layers keep MKL: the sample's 64-dim MLM+TLM pretraining ran 13% slower end to end through
# oneDNN (2 threads), whose weight gradient at these sizes is no faster than MKL's
MIN_ONEDNN_DIM = 128
_without_gradient = [False]
_packed_weights = [None]  # inside onednn_without_gradient(pack_weights=True): id(weight) -> (weight, packed)


@contextlib.contextmanager
def onednn_without_gradient(pack_weights=False):
    """Inside, linear layers that compute no gradient go through oneDNN on the CPU as well. pack_weights:
    for many calls on the same weights (decoding), each weight is reordered once into oneDNN's own layout,
    which oneDNN otherwise does at every call: on a Zen 5, 32 rows through 256 x 256 took 29 us instead of
    36, through the 8,000-word output layer 0.74 ms instead of 1.05 (the same values bit for bit with 5 to
    1,280 rows); back-translation's generation took 9-10% less time (`bench/results/README.md`). The packed
    copies last as long as the context, which must not change the weights."""
    before = _without_gradient[0], _packed_weights[0]
    _without_gradient[0] = True
    _packed_weights[0] = {} if pack_weights and hasattr(torch.ops.mkldnn, "_reorder_linear_weight") else None
    try:
        yield
    finally:
        _without_gradient[0], _packed_weights[0] = before


def _packed(weight):
    """weight in oneDNN's layout, reordered at its first use in the context (see `onednn_without_gradient`);
    the entry keeps the weight alive, so that its id names no other tensor while the context lasts."""
    packed = _packed_weights[0]
    if packed is None:
        return weight
    if id(weight) not in packed:
        packed[id(weight)] = weight, torch.ops.mkldnn._reorder_linear_weight(weight)
    return packed[id(weight)][1]


@functools.cache
def rows_rounded_otherwise(threads):
    """The numbers of rows, below 4 x max(16, threads), whose float32 F.linear (MKL's sgemm) with this many
    threads rounds a row's result otherwise than a large matmul does, on this CPU; larger numbers are taken
    to round alike. MKL splits the rows among the threads, and a share of 1-3 rows takes other kernels. On
    an AMD EPYC (Zen 5), for any widths: 1-3 rows with 1, 3 or 4 threads; also 5-7 and 9-11 with 2; up
    to 51 with 32 threads, 227 with 96; never a multiple of 4."""
    bound = 4 * max(16, threads)
    g = torch.Generator().manual_seed(0)
    x, weight, bias = (torch.randn(*shape, generator=g) for shape in ((bound, 64), (128, 64), (128,)))
    full = F.linear(x, weight, bias)
    return frozenset(m for m in range(1, bound) if not torch.equal(F.linear(x[:m], weight, bias), full[:m]))


def rows_may_change(before, after, dtype):
    """Whether the model may compute `after` rows where the original computes `before` (leaving finished
    sentences or padding out), its translations staying the original's bit for bit: in float32 on the
    CPU, where MKL rounds each row alike with both numbers (`rows_rounded_otherwise`); and always where
    nothing is compared to the original: inside `onednn_without_gradient` (back-translation's
    generation) and in other dtypes."""
    if _without_gradient[0] or before == after or dtype != torch.float32:
        return True
    otherwise = rows_rounded_otherwise(torch.get_num_threads())
    return after > 0 and before not in otherwise and after not in otherwise


def _with_gradient(x, weight):
    return torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)


def uses_onednn(x, weight):
    """Whether `linear(x, weight)` goes through oneDNN, which pads x's rows to `bucket_rows` (a copy of
    x, and of the output's gradient in the backward, unless their number is a bucket size already)."""
    return (x.device.type == "cpu" and x.dtype == weight.dtype == torch.float32 and min(weight.shape) >= MIN_ONEDNN_DIM
            and x.numel() > 0 and not torch.is_autocast_enabled("cpu") and not torch.compiler.is_compiling()
            and has_onednn() and (_with_gradient(x, weight) or _without_gradient[0]))


def linear(x, weight, bias=None):
    """F.linear; in float32 training on the CPU, through oneDNN (see the module's docstring)."""
    if not uses_onednn(x, weight):
        return F.linear(x, weight, bias)
    if _with_gradient(x, weight):
        return _OneDNNLinear.apply(x, weight, bias)
    return _bucketed_linear(x, _packed(weight), bias)[1]


class Linear(nn.Linear):
    """nn.Linear (same parameters, same state dict) through `linear`."""

    def forward(self, x):
        return linear(x, self.weight, self.bias)
