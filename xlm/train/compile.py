"""--compile: the training forward through torch.compile.

Only the training forward is compiled: evaluation and generation (whose cache grows by one position
a step) run the same modules eagerly. Padded batches are padded further, to a length of
`bucket_length`, and the predicted positions of a loss to a multiple of PRED_MULTIPLE, so that the
compiled graphs see a few shapes; padding is masked in the model, and the extra positions' targets are
left out of the loss (IGNORED), so the loss is unchanged.
"""
import torch
import torch.nn.functional as F
from torch import nn

from ..model.linear import IGNORED

# An MLM batch predicts 15% of its tokens, a number that changes at every step: under CUDA graphs
# (mode="reduce-overhead") each count would be a graph recorded anew. Padded, a 32 x 256 stream's ~1,230
# positions fall in 2-3 counts, for at most 63 extra rows of the output layer.
PRED_MULTIPLE = 64
COMPILE_OPTIONS = {}  # torch.compile's keyword arguments; bench.train --compile_mode sets "mode"


def bucket_length(n, multiple=8):
    """n rounded up to a multiple of 8: a padded batch is this long under --compile, so that
    torch.compile sees a few lengths (and GPU kernels aligned ones) rather than one per batch."""
    return -(-n // multiple) * multiple


def _pad_predictions(pred_index, y):
    """Indices of predicted positions and their targets (n,), padded to a multiple of PRED_MULTIPLE with
    copies of the last position (the indices stay in increasing order, as the model's CPU path wants them)
    and targets the loss leaves out."""
    extra = -len(y) % PRED_MULTIPLE
    if not extra or not len(y):
        return pred_index, y
    return torch.cat([pred_index, pred_index[-1:].expand(extra)]), F.pad(y, (0, extra), value=IGNORED)


def _pad(t, length, value=0):
    """t (bs, n, ...) padded along dim 1 to length."""
    if t is None or t.shape[1] == length:
        return t
    pad = [0, 0] * (t.dim() - 2) + [0, length - t.shape[1]]
    return F.pad(t, pad, value=value)


class BucketPadded(nn.Module):
    """`model`'s forward, compiled, on inputs padded to bucket lengths; hidden states come back at the
    input's length. Sizes that vary from batch to batch (rows, length, predicted tokens) are marked
    dynamic, so each graph is compiled once rather than once per shape."""

    def __init__(self, model):
        super().__init__()
        self.pad_index = model.config.pad_index
        self.pads_predictions = not model.config.asm  # torch's adaptive softmax takes no ignored targets
        self.compiled = torch.compile(model, **COMPILE_OPTIONS)  # model's parameters, registered once

    def forward(self, x, lengths, langs=None, positions=None, causal=False, src_enc=None, src_len=None,
                pred_mask=None, y=None):
        slen = x.shape[1]
        if isinstance(langs, int):  # a tensor, not a constant that each language would compile again
            langs = torch.full_like(x, langs)
        if lengths is not None:
            n = bucket_length(slen)
            x = _pad(x, n, self.pad_index)
            langs, positions = _pad(langs, n), _pad(positions, n)
            if pred_mask is not None and pred_mask.dtype == torch.bool:
                pred_mask = _pad(pred_mask, n, False)
            elif pred_mask is not None:  # indices into the flattened (bs * slen) rows, now bs * n
                pred_mask = pred_mask // slen * n + pred_mask % slen
        if self.pads_predictions and y is not None and pred_mask is not None and pred_mask.dtype != torch.bool:
            pred_mask, y = _pad_predictions(pred_mask, y)
        if src_enc is not None:
            src_enc = _pad(src_enc, bucket_length(src_enc.shape[1]))
        for t in (x, lengths, langs, positions, src_enc, src_len, pred_mask, y):
            for dim in range(0 if t is None else min(t.dim(), 2)):
                torch._dynamo.maybe_mark_dynamic(t, dim)
        out = self.compiled(x, lengths, langs=langs, positions=positions, causal=causal, src_enc=src_enc,
                            src_len=src_len, pred_mask=pred_mask, y=y)
        return out if y is not None or pred_mask is not None else out[:, :slen]
