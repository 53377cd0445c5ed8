"""Linear layers whose training matmuls are fast on the CPU.

PyTorch's float32 `F.linear` on the CPU calls MKL's sgemm, which on AMD processors runs at about 40% of
what oneDNN's (also in every x86 wheel of torch) reaches on the same core: 76-98 against 143-225 GFLOP/s
for an MLM step's shapes, one thread of a Zen 5 (bench/results/README.md). Training on the CPU in float32
therefore computes the linear layers' forward and backward matmuls through oneDNN. Evaluation and
decoding (no gradient) keep `F.linear`, the original's operation, so that their outputs stay the
original's bit for bit; so do CUDA, autocast and torch.compile (which has its own CPU kernels).
`XLM_ONEDNN=0` in the environment turns it off.
"""
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


def _onednn_linear(x, weight, bias=None):
    """x (n, in) @ weight (out, in)^T + bias, through oneDNN; x and weight may be strided."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


class _OneDNNLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias):
        rows = x.reshape(-1, x.shape[-1])
        ctx.save_for_backward(rows, weight)
        ctx.has_bias, ctx.in_shape = bias is not None, x.shape
        return _onednn_linear(rows, weight, bias).view(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, grad):
        rows, weight = ctx.saved_tensors
        grad = grad.reshape(-1, weight.shape[0])
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = _onednn_linear(grad, weight.t()).view(ctx.in_shape)       # grad @ weight
        if ctx.needs_input_grad[1]:
            grad_weight = _onednn_linear(grad.t(), rows.t())                   # grad^T @ x
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad.sum(0)
        return grad_x, grad_weight, grad_bias


def linear(x, weight, bias=None):
    """F.linear; in float32 training on the CPU, through oneDNN (see the module's docstring)."""
    if (x.device.type == "cpu" and torch.is_grad_enabled() and x.dtype == weight.dtype == torch.float32
            and (x.requires_grad or weight.requires_grad) and not torch.is_autocast_enabled("cpu")
            and not torch.compiler.is_compiling() and has_onednn()):
        return _OneDNNLinear.apply(x, weight, bias)
    return F.linear(x, weight, bias)


class Linear(nn.Linear):
    """nn.Linear (same parameters, same state dict) through `linear`."""

    def forward(self, x):
        return linear(x, self.weight, self.bias)
