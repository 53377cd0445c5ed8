"""Linear layers whose matmuls are fast on the CPU.

PyTorch's float32 `F.linear` on the CPU calls MKL's sgemm, which on AMD's AVX-512 EPYCs (Zen 4, Zen 5) runs
AVX2 kernels, at 40-70% of the speed of oneDNN's (also in torch's x86 wheels) on the same core: 89-102
against 128-238 GFLOP/s for an MLM step's shapes on a Zen 5, one thread (bench/results/README.md).

Where the CPU is AMD's with AVX-512 (`onednn_chosen`), layers 128 or more wide therefore go through oneDNN
where the original's roundings need not be kept, the places `free_roundings` marks (and where other
operations take faster kernels too):
- training on the CPU in float32, forward and backward;
- back-translation's generation in training: its translations come from weights that training has already
  rounded otherwise, and nothing compares them;
- evaluation's scoring on those CPUs (`scoring_roundings`): perplexities differ from the original's in the
  7th digit anyway (its sums run in another order), and evaluation takes 1.3-1.7x less time.
Decoding must give F.linear's values bit for bit, the original's (its translations then are the
original's): there oneDNN computes them in MKL's order where it can (`mkl_k_blocks`), and F.linear itself
elsewhere; so do CUDA, autocast and torch.compile (which has its own CPU kernels).

Elsewhere every linear layer is F.linear: on a CPU with AVX2 alone (Zen 3) MKL's kernels are the faster
(oneDNN's at 0.6-1.15x their speed, most below 0.9x), and on Intel's AVX-512 CPUs MKL has AVX-512 kernels
of its own (oneDNN's at 0.45-1.01x their speed on an Intel Xeon). `XLM_ONEDNN=1` in the environment forces
oneDNN, `XLM_ONEDNN=0` turns it off.
"""
import contextlib
import functools
import os

import torch
import torch.nn.functional as F
from torch import nn

from ..fileio import DataError


@functools.cache
def has_onednn():
    """Whether this torch has oneDNN's linear op (x86 and Arm wheels)."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def cpu_vendor():
    """The CPU's vendor as Linux names it ("AuthenticAMD", "GenuineIntel"), or "" where unknown."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


@functools.cache
def onednn_chosen():
    """Whether float32 linear layers on the CPU go through oneDNN: where this torch has it and the CPU is
    AMD's with AVX-512, where MKL runs its AVX2 kernels (on Intel's AVX-512 CPUs MKL has AVX-512 kernels
    of its own: on an Intel Xeon, one core, 136-161 GFLOP/s on an MLM step's shapes against oneDNN's
    64-153), unless the environment's XLM_ONEDNN says otherwise (1: wherever this torch has it, 0: never)."""
    choice = os.environ.get("XLM_ONEDNN", "")
    if choice not in ("", "0", "1"):
        raise DataError(f"XLM_ONEDNN is 1 (oneDNN's linear layers), 0 (MKL's) or unset (by the CPU), not {choice!r}")
    if choice == "0" or not has_onednn():
        return False
    return choice == "1" or (torch.backends.cpu.get_cpu_capability().startswith("AVX512")
                             and cpu_vendor() == "AuthenticAMD")


def bucket_rows(n):
    """n rounded up to one of 8 sizes between each power of two and the next (at most 12.5% more):
    oneDNN builds a kernel for each new shape (0.4-11 ms, where the matmul takes 0.07-4 ms), and the
    rows of packed batches, predicted tokens and decoded sentences change at every step."""
    quantum = 1 << max(n.bit_length() - 4, 0)
    return -(-n // quantum) * quantum


def _onednn_linear(x, weight, bias=None):
    """x (n, in) @ weight (out, in)^T + bias, through oneDNN, n a bucket size; x and weight may be strided
    (a strided weight is summed in another order than a contiguous one)."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def _pad_rows(t, m):
    return t if t.shape[0] == m else F.pad(t, (0, 0, 0, m - t.shape[0]))


def _bucketed(x):
    """x's rows (n, in), padded with zeros to their bucket size, and n."""
    rows = x.reshape(-1, x.shape[-1])
    n = rows.shape[0]
    return _pad_rows(rows, bucket_rows(n)), n


def _bucketed_linear(x, weight, bias=None):
    """(x's rows padded to their bucket with zeros, x's output (..., out))"""
    padded, n = _bucketed(x)
    return padded, _onednn_linear(padded, weight, bias)[:n].view(*x.shape[:-1], weight.shape[0])


def _pairs(bounds):
    return list(zip(bounds[:-1], bounds[1:]))


def _blockwise_linear(x, blocks, bias, bounds):
    """x @ weight^T + bias through oneDNN, x's rows padded to their bucket, the input's width cut at `bounds`
    (0, ..., in): blocks holds weight[:, lo:hi] of each block (or its packed copy), and the blocks' sums
    are added in order to the first's, which includes the bias: ((bias + s_1) + s_2) + ..."""
    padded, n = _bucketed(x)
    if len(blocks) == 1:  # the whole width: no slice to make (decoding calls this a few thousand times)
        out = _onednn_linear(padded, blocks[0], bias)
    else:
        out = None
        for (lo, hi), block in zip(_pairs(bounds), blocks):
            part = _onednn_linear(padded[:, lo:hi], block, bias if out is None else None)
            out = part if out is None else out.add_(part)
    return (out if out.shape[0] == n else out[:n]).view(*x.shape[:-1], out.shape[-1])


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


IGNORED = -100  # a target the loss leaves out (F.cross_entropy's ignore_index)


class _LinearCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of targets y (n,), IGNORED where left out, given the logits x @ weight^T + bias, in
    float32 on the CPU: the logits' softmax is taken in place and their gradient written over it, one (rows,
    words) tensor where a linear layer and F.cross_entropy make four (logits, log-probabilities, the loss's
    zero-filled gradient, the logits' gradient). The log of the softmax's sum is read from its largest
    probability (1 / sum, at least 1 / words: it never underflows), so the loss takes no log-softmax; with
    8,000 words the loss's forward and backward took 7 ms instead of 17-18 (614 rows, one thread, Zen 3).
    Through oneDNN (`onednn`), x's rows are padded to their bucket (targets left out). A second backward fails
    on its own (autograd sees the saved probabilities changed)."""

    @staticmethod
    def forward(ctx, x, weight, bias, y, onednn):
        n = len(x)
        if onednn:
            x, _ = _bucketed(x)
            y = F.pad(y, (0, len(x) - n), value=IGNORED)
            probs = _onednn_linear(x, weight, bias)
        else:
            probs = F.linear(x, weight, bias)
        kept = y != IGNORED
        target = y.clamp(min=0)[:, None]
        target_logit = probs.gather(1, target).squeeze(1)
        top = probs.amax(1)
        torch._softmax(probs, 1, False, out=probs)
        log_sum = probs.amax(1).log_().neg_()  # log(sum(exp(logits - top)))
        n_kept = kept.sum()
        ctx.save_for_backward(x, weight, probs, target, kept, n_kept)
        ctx.has_bias, ctx.n, ctx.onednn = bias is not None, n, onednn
        return ((top + log_sum - target_logit) * kept).sum() / n_kept

    @staticmethod
    def backward(ctx, grad):
        x, weight, probs, target, kept, n_kept = ctx.saved_tensors
        row_weight = (grad / n_kept * kept)[:, None]
        grad_logits = probs.mul_(row_weight).scatter_add_(1, target, -row_weight)  # softmax - one-hot
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_x = _onednn_linear(grad_logits, weight.t())[:ctx.n] if ctx.onednn else grad_logits @ weight
        if ctx.needs_input_grad[1]:
            grad_weight = _weight_gradient(grad_logits, x) if ctx.onednn else grad_logits.t() @ x
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad_logits.sum(0)
        return grad_x, grad_weight, grad_bias, None, None


# Narrower layers keep MKL: the sample's 64-dim MLM+TLM pretraining ran 13% slower end to end through
# oneDNN (2 threads), whose weight gradient at these sizes is no faster than MKL's
MIN_ONEDNN_DIM = 128
_free_roundings = [False]
_packed_weights = [None]  # inside weights_packed(): (id(weight), bounds) -> (weight, its blocks packed)


@contextlib.contextmanager
def weights_packed():
    """Inside, the weights that linear layers without gradient read through oneDNN are reordered into
    oneDNN's own layout once, at their first use, which oneDNN otherwise does at every call: on a Zen 5,
    32 rows through 256 x 256 took 29 us instead of 36, through the 8,000-word output layer 0.74 ms
    instead of 1.05 (the same values bit for bit with 5 to 1,280 rows). For many calls on the same weights
    (decoding); the packed copies last as long as the outermost context, which must not change the weights.
    Only parameters are packed: a tensor made for one call (the attention's q, k and v weights side by
    side in a forward) is used once; decoding's are parameters made for all its steps."""
    if _packed_weights[0] is not None or not hasattr(torch.ops.mkldnn, "_reorder_linear_weight"):
        yield
        return
    _packed_weights[0] = {}
    try:
        yield
    finally:
        _packed_weights[0] = None


@contextlib.contextmanager
def free_roundings():
    """Inside, what computes no gradient need not round as the original does, for speed (back-translation's
    generation in training, evaluation's scores where `scoring_roundings` frees them): linear layers go
    through oneDNN on the CPU as well, in its own order (decoding packs its weights: back-translation's
    generation took 9-10% less time that way, `bench/results/README.md`), GELU is F.gelu's kernel,
    attention over whole sequences is F.scaled_dot_product_attention's (a fused kernel), greedy decoding
    picks with argmax, and attention reads the source's keys in place
    (`MultiHeadAttention.source_keys_values`)."""
    before = _free_roundings[0]
    _free_roundings[0] = True
    try:
        yield
    finally:
        _free_roundings[0] = before


def scoring_roundings(device):
    """The roundings of evaluation's scores (perplexities, accuracies) on `device` (or its name): free
    (`free_roundings`) off the CPU and where oneDNN's linear layers are chosen (`onednn_chosen`), where
    evaluation then takes 1.3-1.7x less time (a 512 x 4 MT and MLM on a Zen 5); elsewhere the original's, at
    1-7% more time (MKL's kernels, the same models), which give its accuracies exactly: free roundings turn a
    near tie of the two best scores the other way now and then (1 of 45,909 predictions of a small MT model,
    a tie in xlm's roundings that the original's broke)."""
    return free_roundings() if torch.device(device).type != "cpu" or onednn_chosen() else contextlib.nullcontext()


def in_free_roundings():
    """Whether inside `free_roundings`."""
    return _free_roundings[0]


def _weight_blocks(weight, bounds):
    """weight[:, lo:hi] of each block of `bounds`, contiguous (oneDNN sums a strided weight in another
    order), in oneDNN's layout inside `weights_packed`; the entry keeps the weight alive, so that its id
    names no other tensor while the context lasts."""
    blocks = (weight[:, lo:hi].contiguous() for lo, hi in _pairs(bounds))
    packed = _packed_weights[0]
    if packed is None or not isinstance(weight, nn.Parameter):
        return list(blocks)
    key = id(weight), bounds
    if key not in packed:
        packed[key] = weight, [torch.ops.mkldnn._reorder_linear_weight(b) for b in blocks]
    return packed[key][1]


@functools.cache
def row_roundings(in_features, out_features, threads):
    """How float32 F.linear (MKL's sgemm) of this shape, with this many threads, rounds a row by the number
    of rows of its matmul, on this CPU: (otherwise, settled), otherwise the numbers of rows below
    `small_rows` that round a row otherwise than a large matmul does, settled whether the larger numbers
    probed all round as a large matmul does (larger numbers are then taken to round alike). The large
    matmul is the first of 4, 8, 16 x small_rows rows that rounds as one 4 times as large; where none
    does, every number is taken to round otherwise. MKL splits the rows among the threads, and a share of
    a few rows takes other kernels. On an AMD EPYC (Zen 5), for any shape: 1-3 rows with 1, 3 or 4 threads;
    also 5-7 and 9-11 with 2; up to 51 with 32 threads, 227 with 96; never a multiple of 4. On an Intel
    Xeon (AVX-512) the numbers grow with the width and depend on the shape: with one thread 1 row from 16
    to 40 wide, 1-10 at 256, 1-15 from 384; with two, up to 128-512 rows for some shapes from 1,024 wide
    (not settled). Found once per process, shape and thread count: 0.3 s for a 256 x 8,000 output layer,
    16 s for 1,024 x 95,000 (one core)."""
    bound = small_rows(threads)
    g = torch.Generator().manual_seed(0)
    x, weight, bias = (torch.randn(*shape, generator=g)
                       for shape in ((64 * bound, in_features), (out_features, in_features), (out_features,)))
    large = 4 * bound
    while True:
        # against 4 times as many rows: on an Intel Xeon with two threads, 256 and 512 rows 4,096 wide round
        # alike, and otherwise than 768 or more
        reference = F.linear(x[:4 * large], weight, bias)
        if torch.equal(F.linear(x[:large], weight, bias), reference[:large]):
            break
        if 4 * large == len(x):
            return frozenset(range(1, bound)), False
        large *= 2

    def alike(m):
        return torch.equal(F.linear(x[:m], weight, bias), reference[:m])
    otherwise = frozenset(m for m in range(1, bound) if not alike(m))
    settled = all(alike(m) for m in (bound, bound + 1, (bound + large) // 2 + 3, large - 1, large + 5,
                                     2 * large + 3, 4 * large - 1))
    return otherwise, settled


def small_rows(threads):
    """Below this many rows, MKL's sgemm may round a row otherwise than in a large matmul (on the AMD
    EPYCs; beyond it on an Intel Xeon with two threads and wide layers: `row_roundings` finds them)."""
    return 4 * max(16, threads)


def rounds_as_large(rows, dtype, shapes):
    """Whether float32 F.linear of this many rows rounds each row as a large matmul does through every
    shape ((in, out) pairs: `matmul_shapes`), on the CPU (`row_roundings`); always inside `free_roundings`
    and in other dtypes, where nothing is compared to the original."""
    if _free_roundings[0] or dtype != torch.float32:
        return True
    threads = torch.get_num_threads()
    for shape in sorted(shapes, key=lambda s: s[0] * s[1]):  # the cheaper probes first: one may settle it
        otherwise, settled = row_roundings(*shape, threads)
        if rows in otherwise or not settled and rows >= small_rows(threads):
            return False
    return True


def rows_may_change(before, after, dtype, shapes):
    """Whether a model whose linear layers have these shapes may compute `after` rows where the original
    computes `before` (leaving finished sentences or padding out), its translations staying the
    original's bit for bit: where both numbers round each row as a large matmul does (`rounds_as_large`)."""
    return before == after or after > 0 and rounds_as_large(before, dtype, shapes) and \
        rounds_as_large(after, dtype, shapes)


def matmul_shapes(*modules):
    """The (in, out) shapes of the matmuls over rows in these modules, for `rows_may_change`: their linear
    layers', and those a module computes otherwise, which it names in its `own_matmul_shapes`."""
    return frozenset(shape for module in modules for m in module.modules()
                     for shape in ([(m.in_features, m.out_features)] if isinstance(m, nn.Linear) else
                                   m.own_matmul_shapes() if hasattr(m, "own_matmul_shapes") else []))


def _k_block_candidates(k):
    """Ways to cut a dot product of length k into blocks summed one after the other: whole, in halves,
    in blocks of a fixed width (the last one shorter)."""
    yield 0, k
    for half in sorted({k // 2, (k + 1) // 2} - {0}):
        yield 0, half, k
    for width in (64, 96, 128, 192, 256, 384, 512):
        if width < k:
            yield *range(0, k, width), k


def _in_mkl_order(bounds, rows, out_features, seed):
    """Whether `_blockwise_linear` with these bounds gives float32 F.linear's values bit for bit, with and
    without bias, weights packed or not, on `rows` random rows, with the threads of the moment."""
    k = bounds[-1]
    g = torch.Generator().manual_seed(seed)
    x, weight, bias = (torch.randn(*shape, generator=g) for shape in ((rows, k), (out_features, k), (out_features,)))
    sliced = _weight_blocks(weight, bounds)  # a plain tensor: never packed there
    packed = [torch.ops.mkldnn._reorder_linear_weight(b) for b in sliced] \
        if hasattr(torch.ops.mkldnn, "_reorder_linear_weight") else sliced
    with torch.no_grad():
        return all(torch.equal(_blockwise_linear(x, blocks, b, bounds), F.linear(x, weight, b))
                   for b in (bias, None) for blocks in (sliced, packed))


@functools.cache
def mkl_k_blocks(k, threads):
    """The blocks in which float32 F.linear (MKL's sgemm) sums a dot product of length k with this many
    threads, on this CPU, as bounds (0, ..., k), or None if none of `_k_block_candidates` is it (another
    BLAS, another CPU). MKL adds the blocks' sums one after the other to the bias, and on the project's
    AMD EPYC (Zen 5) sums a block as oneDNN does, for any number of rows, outputs and threads tried
    (not in `row_roundings`): a block of k <= 192, two halves up to 384, blocks of 192 beyond.
    oneDNN computing each block then gives MKL's values bit for bit, 1.4-2.8x faster on beam search's
    shapes (160 rows; `python -m bench.cpu_matmul`). Found once per process and width, on random
    matrices; `linear` also checks the first call of each shape against F.linear (another CPU's MKL may
    take other kernels for other sizes)."""
    if not has_onednn():
        return None
    rows = small_rows(threads) + 8
    return next((bounds for bounds in _k_block_candidates(k)
                 if _in_mkl_order(bounds, rows, 264, k) and _in_mkl_order(bounds, 5 * rows, 520, k + 1)), None)


# (in, out, rows, threads) -> whether oneDNN in MKL's order gave F.linear's values at the first such call;
# rows are counted exactly below `small_rows`, where MKL and oneDNN take other kernels for some, and by
# their bucket above
_checked_shapes = {}


def _shape(rows, weight):
    threads = torch.get_num_threads()
    return *weight.shape[::-1], rows if rows < small_rows(threads) else bucket_rows(rows), threads


# Smaller matmuls keep MKL: each block is one oneDNN call (~10-20 us), and below about two million
# multiply-adds a block MKL is faster (bench.cpu_matmul: 32 rows through 256 x 256, two blocks, 0.66x)
MIN_MKL_ORDER_MACS = 2 ** 21


def mkl_order_blocks(x, weight):
    """The blocks (see `mkl_k_blocks`) in which `linear` computes float32 F.linear(x, weight) without
    gradient through oneDNN, bit for bit, or None where it calls F.linear."""
    if not _onednn_at_hand(x, weight) or _with_gradient(x, weight):
        return None
    k = weight.shape[1]
    rows = x.numel() // k if k else 0
    macs = rows * k * weight.shape[0]
    if macs < MIN_MKL_ORDER_MACS:
        return None
    bounds = mkl_k_blocks(k, torch.get_num_threads())
    if (bounds is None or macs < MIN_MKL_ORDER_MACS * (len(bounds) - 1)
            or _checked_shapes.get(_shape(rows, weight)) is False):
        return None
    return bounds


def _with_gradient(x, weight):
    return torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)


def _cpu_float32(x, weight):
    """float32 on the CPU, outside autocast and torch.compile."""
    return (x.device.type == "cpu" and x.dtype == weight.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")
            and not torch.compiler.is_compiling())


def _onednn_at_hand(x, weight):
    """`_cpu_float32`, with oneDNN chosen (`onednn_chosen`)."""
    return _cpu_float32(x, weight) and onednn_chosen()


def uses_onednn(x, weight):
    """Whether `linear(x, weight)` goes through oneDNN in its own order, which pads x's rows to
    `bucket_rows` (a copy of x, and of the output's gradient in the backward, unless their number is a
    bucket size already)."""
    return ((_free_roundings[0] or _with_gradient(x, weight)) and min(weight.shape) >= MIN_ONEDNN_DIM
            and x.numel() > 0 and _onednn_at_hand(x, weight))


def pads_rows(weight):
    """Whether `linear` pads the rows of its inputs (float32 on the CPU) to this weight to `bucket_rows`:
    oneDNN's calls in training (the weight learning) and inside `free_roundings`."""
    return ((_free_roundings[0] or torch.is_grad_enabled() and weight.requires_grad)
            and min(weight.shape) >= MIN_ONEDNN_DIM and _onednn_at_hand(weight, weight))


def calls_f_linear(x, weight):
    """Whether `linear(x, weight)` is F.linear itself."""
    return not uses_onednn(x, weight) and mkl_order_blocks(x, weight) is None


def linear(x, weight, bias=None):
    """F.linear; in float32 on the CPU, through oneDNN: in training in its own order, without gradient in
    MKL's where it can (see the module's docstring)."""
    # first: on CUDA, under torch.compile (no size looked at, no guards) and where MKL is chosen, F.linear
    if not _onednn_at_hand(x, weight):
        return F.linear(x, weight, bias)
    if uses_onednn(x, weight):
        if _with_gradient(x, weight):
            return _OneDNNLinear.apply(x, weight, bias)
        whole = (0, weight.shape[1])
        return _blockwise_linear(x, _weight_blocks(weight, whole), bias, whole)
    bounds = mkl_order_blocks(x, weight)
    if bounds is None:
        return F.linear(x, weight, bias)
    out = _blockwise_linear(x, _weight_blocks(weight, bounds), bias, bounds)
    shape = _shape(out.numel() // weight.shape[0], weight)
    if shape not in _checked_shapes:  # the first call of a shape checks itself, on real values, against F.linear
        expected = F.linear(x, weight, bias)
        _checked_shapes[shape] = torch.equal(out, expected)
        return expected
    return out


def cross_entropy(x, weight, bias, y):
    """F.cross_entropy(linear(x, weight, bias), y, ignore_index=IGNORED) for x (n, in), y (n,); in float32
    training on the CPU, `_LinearCrossEntropy` (through oneDNN: an MLM step 0.8-5.4% faster with 8,000-32,000
    words on a Zen 5)."""
    if _with_gradient(x, weight) and _cpu_float32(x, weight):
        return _LinearCrossEntropy.apply(x, weight, bias, y, uses_onednn(x, weight))
    return F.cross_entropy(linear(x, weight, bias).float(), y, ignore_index=IGNORED)


class Linear(nn.Linear):
    """nn.Linear (same parameters, same state dict) through `linear`."""

    def forward(self, x):
        return linear(x, self.weight, self.bias)
