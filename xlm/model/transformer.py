"""The XLM Transformer: one class for the encoder (bidirectional or causal) and the decoder.

Post-LayerNorm (BERT style) layers with LayerNorm eps 1e-12, an embedding LayerNorm, learned or
sinusoidal positions (a 512-row table), optional language embeddings, GELU or ReLU, and an output
projection tied to the input embeddings. The table size and the eps are the original's constants made
configurable, for Hugging Face XLM models that set them otherwise. Module and parameter names are the
original XLM's, so its state dicts load without renaming. Tensors are batch-first: x is (batch, length).
"""
import contextlib
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import sdpa_kernel

from .attention import (PADDED_ATTENTION_KERNELS, attention_with_dropout, original_attention, varlen_applies,
                        varlen_attention)
from .dropout import dropout
from .linear import (Linear, bucket_rows, calls_f_linear, cross_entropy, in_free_roundings, linear, matmul_shapes,
                     pads_rows, rounds_as_large, rows_may_change)
from .memory import HashingMemory, MemoryConfig

N_MAX_POSITIONS = 512  # the original's fixed position table; checkpoints without `n_positions` have it
# The training loss computes logits for a vocabulary padded to a multiple of this: a matmul whose output
# rows are not a multiple of 8 long runs up to 1.8x slower on the CPU's BLAS (8,054 words against 8,056;
# 8,064 gains nothing more), and GPU tensor-core kernels want multiples of 8 as well. The released
# models' 95,000 and 200,000 words need no padding.
VOCAB_MULTIPLE = 8


@dataclass
class TransformerConfig:
    n_words: int
    emb_dim: int = 512
    n_layers: int = 4
    n_heads: int = 8
    dropout: float = 0.0
    attention_dropout: float = 0.0
    gelu_activation: bool = False
    share_inout_emb: bool = True
    sinusoidal_embeddings: bool = False
    use_lang_emb: bool = True
    n_langs: int = 1
    is_decoder: bool = False
    asm: bool = False
    asm_cutoffs: tuple = (8000, 20000)
    asm_div_value: float = 4.0
    memory: MemoryConfig = None
    mem_positions: list = field(default_factory=list)  # [(layer, 'in' | 'after')]
    pad_index: int = 2
    eos_index: int = 1
    n_positions: int = N_MAX_POSITIONS
    layer_norm_eps: float = 1e-12

    @property
    def has_lang_emb(self):
        return self.n_langs > 1 and self.use_lang_emb


def sinusoidal_table(n_positions, dim):
    """PE[pos, j] = sin / cos (pos / 10000^(2*(j//2)/dim)) on even / odd columns."""
    j = np.arange(dim)
    angles = np.arange(n_positions)[:, None] / np.power(10000, 2 * (j // 2) / dim)[None, :]
    table = np.where(j % 2 == 0, np.sin(angles), np.cos(angles))
    return torch.tensor(table, dtype=torch.float32)


def embedding(n, dim, padding_idx=None):
    emb = nn.Embedding(n, dim, padding_idx=padding_idx)
    nn.init.normal_(emb.weight, mean=0, std=dim ** -0.5)
    if padding_idx is not None:
        nn.init.zeros_(emb.weight[padding_idx])
    return emb


def compute_dtype(t):
    """The dtype of what the linear layers make of t: autocast's, where it is on."""
    device = t.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else t.dtype


def gelu_as_original(x):
    """The original's GELU, 0.5 * x * (1.0 + erf(x / sqrt(2))), whose rounding differs from F.gelu's in
    most values; used in evaluation and decoding outside `free_roundings` (see `original_attention`). The
    same operations on the same values, two of them in place (fewer (rows, 4 * dim) tensors to allocate)."""
    return torch.mul(x, 0.5).mul_(torch.erf(x / math.sqrt(2.0)).add_(1.0))


def check_lengths(lengths, bs, slen):
    """The original's checks of a batch's lengths: one per row, none past the row (the longest read only
    where that is free, `reads_on_host`). x is (batch, length) here, where the original's is (length,
    batch): its callers' batches fail the first."""
    if lengths.shape != (bs,):
        raise ValueError(f"lengths of shape {tuple(lengths.shape)} for x of {bs} rows of {slen} tokens: one length "
                         "per row (x is (batch, length), not the original XLM's (length, batch))")
    if reads_on_host(lengths.device) and bs and int(lengths.max()) > slen:
        raise ValueError(f"a length of {int(lengths.max())} for rows of {slen} tokens")


def reads_on_host(device):
    """Whether the model reads tensor values on the host, where that is free (on the CPU): to leave the
    padding of a batch out of all but attention (`Packing`), and for the last layer's queries at the
    wanted positions alone (`MultiHeadAttention._at_rows`). On CUDA it would make the host wait: there
    the padding is computed and zeroed after each layer (the varlen kernel skips it in attention), and
    the last layer's attention runs for every query. Not under torch.compile, whose graphs would break
    on the numbers read."""
    return device.type == "cpu" and not torch.compiler.is_compiling()


@dataclass
class Packing:
    """A (bs, slen) batch whose real tokens alone (all of them where no row is padded) go through the
    position-wise parts of the layers, as `rows` rows; attention sees them padded again. The rows are the
    n real tokens, then, up to `rows`, copies of the first: where the linear layers go through oneDNN
    (`pads_rows`: AMD's CPUs with AVX-512), as many as they pad their input to anyway (`bucket_rows`), so that
    no layer copies its input, nor its gradient in the backward, to pad it (5% of a translation training
    step, 8% of its evaluation). A copy's row is computed as the first's and then left out: attention
    reads the real tokens alone, and no loss reads a copy (its gradient is 0)."""
    tokens: torch.Tensor  # (n,): the real tokens' indices in the flattened bs * slen
    bs: int
    slen: int
    rows: int

    def __post_init__(self):
        copies = self.rows - len(self.tokens)
        self.index = torch.cat([self.tokens, self.tokens[:1].expand(copies)]) if copies else self.tokens

    def pack(self, t):
        """(bs, slen, ...) -> (rows, ...)"""
        return t.flatten(0, 1).index_select(0, self.index)

    def pad(self, h):
        """(rows, d) -> (bs, slen, d): the real tokens, zeros at the padding."""
        real = h[:len(self.tokens)]
        if len(real) == self.bs * self.slen:  # no padding: every position is a real token, in order
            return real.view(self.bs, self.slen, -1)
        padded = h.new_zeros(self.bs * self.slen, h.shape[-1]).index_copy_(0, self.tokens, real)
        return padded.view(self.bs, self.slen, -1)

    def find(self, positions):
        """The packed rows of these indices into the flattened bs * slen (real tokens only)."""
        return torch.searchsorted(self.tokens, positions)


class MultiHeadAttention(nn.Module):
    """Self-attention, or attention over `kv` (the encoder output); `step` and `step_cross` attend from one
    new position per row, for incremental decoding. `_attention` picks the kernel: the variable-length one
    for padded batches on CUDA, the original's operations where outputs must be its own (evaluation and
    decoding), the CPU's cheaper dropout, or PyTorch's fused SDPA."""

    def __init__(self, n_heads, dim, dropout):
        super().__init__()
        self.n_heads, self.dim, self.dropout = n_heads, dim, dropout
        self.q_lin = Linear(dim, dim)
        self.k_lin = Linear(dim, dim)
        self.v_lin = Linear(dim, dim)
        self.out_lin = Linear(dim, dim)

    @staticmethod
    def _stacked(linears):
        """The linear maps' weights and biases side by side: (weight, bias) of one wider map."""
        return torch.cat([lin.weight for lin in linears]), torch.cat([lin.bias for lin in linears])

    @staticmethod
    def _side_by_side_rounds_alike(x, n_maps):
        """Whether n_maps maps of x side by side, as one matmul (a wider one runs closer to the peak), give
        each map's own values, or need not: in training and `free_roundings`; on the CPU, where the number
        of rows rounds as a large matmul through both shapes (on an Intel Xeon with two threads, 4 and 5
        rows 128 or 192 wide gave other values side by side). Not on CUDA, where cuBLAS picks its kernel,
        hence its order of sums, by the matmul's shape."""
        if torch.is_grad_enabled() or in_free_roundings():
            return True
        dim = x.shape[-1]
        return x.is_cpu and rounds_as_large(x.numel() // dim, compute_dtype(x), [(dim, dim), (dim, dim * n_maps)])

    @staticmethod
    def _projections(x, *linears):
        """x through the linear maps: side by side where that rounds as each map alone does, otherwise
        the maps' own matmuls, the original's."""
        if MultiHeadAttention._side_by_side_rounds_alike(x, len(linears)):
            return linear(x, *MultiHeadAttention._stacked(linears))
        return torch.cat([lin(x) for lin in linears], dim=-1)

    def own_matmul_shapes(self):
        """The maps side by side (`_projections`), for `matmul_shapes`."""
        return [(self.dim, 3 * self.dim), (self.dim, 2 * self.dim)]

    def _heads(self, x):
        bs, n, _ = x.shape
        return x.view(bs, n, self.n_heads, self.dim // self.n_heads).transpose(1, 2)

    def forward(self, x, mask, kv=None, is_causal=False, kv_lengths=None, rows=None, packing=None):
        """x (bs, qlen, dim), or its real tokens (n, dim) with their `packing`; mask broadcastable to
        (bs, heads, qlen, klen), True where attending, or None (with is_causal for the causal
        triangle). kv_lengths (bs,): when the mask only hides the keys' padding, the keys of each row,
        for the kernel that skips it. Returns the output (bs, qlen, dim), packed (n, dim), or at rows
        alone (len(rows), dim): the only positions wanted, as indices in the flattened bs * qlen."""
        if rows is not None and not is_causal and reads_on_host(x.device):
            return self._at_rows(x, mask, kv, rows, packing)
        pad = packing.pad if packing is not None else lambda t: t
        if kv is None:
            qkv = pad(self._projections(x, self.q_lin, self.k_lin, self.v_lin))
            q, k, v = map(self._heads, qkv.chunk(3, dim=-1))
        else:
            q = self._heads(pad(self.q_lin(x)))
            k, v = map(self._heads, self._projections(kv, self.k_lin, self.v_lin).chunk(2, dim=-1))
        context = self._attention(q, k, v, mask, is_causal, kv_lengths)
        bs, _, qlen, _ = context.shape
        context = context.transpose(1, 2).reshape(bs, qlen, self.dim)
        wanted = rows if rows is not None else packing.index if packing is not None else None
        if wanted is not None:
            context = context.flatten(0, 1).index_select(0, wanted)
        return self.out_lin(context)

    def _attention(self, q, k, v, mask, is_causal, kv_lengths=None):
        dropout = self.dropout if self.training else 0.0
        if kv_lengths is not None and varlen_applies(q, dropout):
            return varlen_attention(q, k, v, kv_lengths)
        if not self.training and not in_free_roundings():
            return original_attention(q, k, v, mask, is_causal)
        if dropout and q.device.type == "cpu":
            return attention_with_dropout(q, k, v, mask, is_causal, dropout)
        with sdpa_kernel(PADDED_ATTENTION_KERNELS) if mask is not None and q.is_cuda else contextlib.nullcontext():
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=is_causal)

    def _at_rows(self, x, mask, kv, rows, packing):
        """`forward` with queries at the wanted rows alone (MLM's 15% of positions, a classifier's first),
        rows in increasing order: each batch row's queries side by side, padded to the most of any row,
        a number read on the host (`reads_on_host`)."""
        bs, qlen = (packing.bs, packing.slen) if packing is not None else x.shape[:2]
        xq = x.index_select(0, packing.find(rows)) if packing is not None else x.flatten(0, 1).index_select(0, rows)
        keys_values = self._projections(x if kv is None else kv, self.k_lin, self.v_lin)
        if kv is None and packing is not None:
            keys_values = packing.pad(keys_values)
        k, v = map(self._heads, keys_values.chunk(2, dim=-1))
        row = rows // qlen  # sorted, as the positions of a mask are
        counts = torch.bincount(row, minlength=bs)
        width = int(counts.max())
        slots = row * width + torch.arange(len(rows)) - (torch.cumsum(counts, 0) - counts)[row]
        q = self.q_lin(xq)  # in autocast's dtype, where the zeros must be too
        q = q.new_zeros(bs * width, self.dim).index_copy_(0, slots, q).view(bs, width, self.dim)
        context = self._attention(self._heads(q), k, v, mask, False)
        return self.out_lin(context.transpose(1, 2).reshape(bs * width, self.dim).index_select(0, slots))

    def source_keys_values(self, src_enc):
        """The keys and values of the encoder output (bs, src_len, dim): the keys transposed, (bs * heads,
        head_dim, src_len), the values (bs * heads, src_len, head_dim), laid out as the original's matmul
        lays them out (the layout changes the roundings): it copies the transposed keys of several rows
        into one tensor, and reads a single row's in place, as it does the values. Inside `free_roundings`
        the keys are read in place (each key's numbers side by side): back-translation's generation took
        1-4% less time, as the keys come from memory rather than cache at each step."""
        keys, values = (self._heads(lin(src_enc)).flatten(0, 1) for lin in (self.k_lin, self.v_lin))
        keys_t = keys.transpose(1, 2)
        return (keys_t.contiguous() if len(src_enc) > 1 and not in_free_roundings() else keys_t), values

    def _queries(self, x):
        """The queries of x (n, dim), as (n * heads, 1, head_dim)."""
        return self.q_lin(x).view(len(x) * self.n_heads, 1, self.dim // self.n_heads)

    def side_by_side(self, dtype):
        """The query, key and value maps' weights and biases side by side, as parameters (which
        `weights_packed` packs), for the decoding steps of `free_roundings` (`step`); in the dtype the
        steps compute in (autocast's: it caches its casts of trained weights only, and would cast these
        again at every step)."""
        return [nn.Parameter(t.to(dtype), requires_grad=False)
                for t in self._stacked((self.q_lin, self.k_lin, self.v_lin))]

    def step(self, x, keys, values, t, qkv=None):
        """Self-attention of position t of each row, x (rows, dim), over positions 0..t, whose keys and
        values are kept in keys/values (rows, heads, >t, head_dim); this position's are written there.
        qkv: `side_by_side`'s weight and bias, to compute the three maps in one matmul (another order
        of sums than the original's three: back-translation's generation took 5% less time)."""
        rows, d = len(x), self.dim // self.n_heads
        if qkv is None:
            q, k, v = self._queries(x), self.k_lin(x), self.v_lin(x)
        else:
            q, k, v = linear(x, *qkv).chunk(3, dim=-1)
            q = q.reshape(rows * self.n_heads, 1, d)
        keys[:, :, t] = k.view(rows, self.n_heads, d)
        values[:, :, t] = v.view(rows, self.n_heads, d)
        k, v = keys[:, :, :t + 1].flatten(0, 1), values[:, :, :t + 1].flatten(0, 1)
        return self._attend(q, k.transpose(1, 2), v, None)

    def step_cross(self, x, keys_t, values, bias):
        """Attention of x (n, dim) over the encoder output, whose keys and values are those of
        `source_keys_values`. bias (n * heads, 1, src_len): -inf on the source's padding."""
        return self._attend(self._queries(x), keys_t, values, bias)

    def _attend(self, q, keys_t, v, bias):
        """q (n * heads, 1, d) over keys_t (n * heads, d, klen) and v (n * heads, klen, d) -> (n, dim).
        The original's operations on the original's shapes and layouts (see `original_attention`), as
        batched matmuls, which beat the fused kernels for one query."""
        scores = torch.bmm(q / math.sqrt(q.shape[-1]), keys_t)
        if bias is not None:
            scores += bias
        weights = F.softmax(scores.float(), dim=-1).type_as(scores)
        weights = dropout(weights, self.dropout, self.training)
        return self.out_lin(torch.bmm(weights, v).view(-1, self.dim))


class TransformerFFN(nn.Module):
    def __init__(self, dim, hidden_dim, dropout, gelu_activation):
        super().__init__()
        self.lin1 = Linear(dim, hidden_dim)
        self.lin2 = Linear(hidden_dim, dim)
        self.dropout = dropout
        self.gelu_activation = gelu_activation

    def forward(self, x):
        h = self.lin1(x)
        if not self.gelu_activation:
            h = F.relu(h)
        else:  # both the exact erf form; F.gelu is one fused kernel
            h = F.gelu(h) if self.training or in_free_roundings() else gelu_as_original(h)
        return dropout(self.lin2(h), self.dropout, self.training)


class PredLayer(nn.Module):
    """Output layer: a projection to the vocabulary, or an adaptive softmax (`asm`)."""

    def __init__(self, config):
        super().__init__()
        self.asm = config.asm
        if config.asm:
            self.proj = nn.AdaptiveLogSoftmaxWithLoss(config.emb_dim, config.n_words, cutoffs=list(config.asm_cutoffs),
                                                      div_value=config.asm_div_value, head_bias=True)
        else:
            self.proj = Linear(config.emb_dim, config.n_words, bias=True)

    def scores(self, h, out=None):
        """(n, dim) -> (n, n_words): logits, or log-probabilities with the adaptive softmax. out: a
        tensor of that shape for the logits, which beam search reuses at every step, where they are
        F.linear's (MKL's); ignored under autocast (which skips out= calls) or another dtype."""
        if self.asm:
            with torch.autocast(h.device.type, enabled=False):
                return self.proj.log_prob(h.float())
        if (out is None or out.dtype != h.dtype or torch.is_autocast_enabled(h.device.type)
                or not calls_f_linear(h, self.proj.weight)):
            return self.proj(h)
        return torch.addmm(self.proj.bias, h, self.proj.weight.t(), out=out)

    def loss(self, h, y):
        """Mean cross-entropy of predicting y (n,) from h (n, dim)."""
        if self.asm:
            # in float32: under the CPU's autocast, torch's adaptive softmax mixes bf16 and float32 rows
            with torch.autocast(h.device.type, enabled=False):
                return self.proj(h.float(), y).loss
        weight, bias = self.proj.weight, self.proj.bias
        pad = -len(weight) % VOCAB_MULTIPLE
        if pad:  # columns no target can be: -inf logits, zero probability, zero gradient
            weight = torch.cat([weight, weight.new_zeros(pad, weight.shape[1])])
            bias = torch.cat([bias, bias.new_full((pad,), -float("inf"))])
        return cross_entropy(h, weight, bias, y)


def flat_positions(pred_mask):
    """The positions of a boolean (bs, slen) mask as indices in its flattened rows, the form of
    `TransformerModel.forward`'s pred_mask that training makes on the CPU."""
    return pred_mask.flatten().nonzero().squeeze(1)


@dataclass
class DecodingState:
    """What incremental decoding keeps between steps. The self-attention keys and values of all layers
    are one tensor, written in place, and a beam reorder (or leaving finished sentences out) copies them
    into a spare. Both live in buffers allocated once (a fresh one per step costs more than the copy, in
    page faults), and grow by GROW positions at a time, so that the copy moves little free room. The copy
    is made at the next step, on the CPU one layer at a time, just before the layer's attention reads it
    (`layer`): made all at once, the first layers' keys and values had left the cache by then (beam 5 of
    32 sentences through 4 x 256 holds 75 MB of them at 57 positions), and the self-attention's matmuls
    took 1.5 times the original's, which reads each layer's right after concatenating them (1.1-1.3 times
    now; that beam search 2-3% faster in all)."""
    GROW = 8
    source: list               # per layer, the encoder output's keys and values (rows * heads, src_len, head_dim)
    source_bias: torch.Tensor  # (rows * heads, 1, src_len): 0, or -inf on the source's padding
    heads: int
    max_len: int
    kv: torch.Tensor = None    # (2 * layers, rows, heads, capacity, head_dim): keys (even), values (odd)
    projections: list = None   # per layer, inside free_roundings: MultiHeadAttention.side_by_side's
    spare: torch.Tensor = None
    rows: torch.Tensor = None  # a reorder not yet applied to kv: row i goes on from kv's row rows[i]
    reordered: torch.Tensor = None  # in spare's memory: kv's rows in that order, filled layer by layer
    length: int = 0            # positions filled
    reorder_by_layer: bool = True  # False on a GPU: all layers at once, one kernel, where launches count
    # whether the beams of each sentence hold the same copy of its source's keys and values (`start_decoding`)
    beams_share_source: bool = True

    def room(self, config, dtype):
        """Room for one more position in the keys and values, before `layer` is asked for each layer."""
        layers, d = 2 * config.n_layers, config.emb_dim // self.heads
        if self.kv is None:
            rows = len(self.source_bias) // self.heads
            memory = [self.source_bias.new_empty(layers * rows * self.heads * self.max_len * d, dtype=dtype)
                      for _ in range(2)]
            self.kv, self.spare = (_shaped(m, (layers, rows, self.heads, 0, d)) for m in memory)
        if self.kv.shape[3] == self.length:
            shape = (*self.kv.shape[:3], min(self.length + self.GROW, self.max_len), d)
            kv = _shaped(self.spare, shape)
            kv[:, :, :, :self.length] = self.kv
            self.kv, self.spare = kv, _shaped(self.kv, shape)
        if self.rows is not None:
            self.reordered = _shaped(self.spare, (self.kv.shape[0], len(self.rows), *self.kv.shape[2:]))

    def layer(self, i):
        """Layer i's keys and values (rows, heads, capacity, head_dim), in the rows' current order."""
        if self.rows is not None and self.reorder_by_layer:
            for j in (2 * i, 2 * i + 1):  # along the first dimension, where torch's CPU copy runs on every thread
                torch.index_select(self.kv[j], 0, self.rows, out=self.reordered[j])
        elif self.rows is not None and i == 0:
            torch.index_select(self.kv, 1, self.rows, out=self.reordered)
        kv = self.kv if self.rows is None else self.reordered
        return kv[2 * i], kv[2 * i + 1]

    def advance(self):
        """Every layer's keys and values took the new position."""
        if self.rows is not None:
            self.kv, self.spare = self.reordered, _shaped(self.kv, self.reordered.shape)
            self.rows = self.reordered = None
        self.length += 1

    def reorder(self, rows):
        """Row i goes on from row rows[i]: a beam of the same sentence, whose source is the same, or, with
        fewer rows than before, the rows of the sentences still decoded (and a beam of theirs). The
        source's keys and values go along only where a beam's may differ from another's of its sentence
        (`beams_share_source`): the original reorders them too."""
        if len(rows) != len(self.source_bias) // self.heads or not self.beams_share_source:
            heads = self.heads
            head_rows = (rows[:, None] * heads + torch.arange(heads, device=rows.device)).flatten()
            self.source = [(_select_rows(keys_t, head_rows), values.index_select(0, head_rows))
                           for keys_t, values in self.source]
            self.source_bias = self.source_bias.index_select(0, head_rows)
        if self.kv is not None:
            self.rows = rows if self.rows is None else self.rows[rows]


def _beams_apart(t, sentences, group):
    """Whether any beam of a sentence holds other values in t than the sentence's first beam (a 0-d
    tensor), t's first dimension holding the sentences' `group` beams in turn (each beam's heads one
    after the other). The beams' copies of a source's keys come from one matmul over all their rows,
    which MKL may round apart for a few of them (on the AMD EPYCs where a thread's share is 1-3 rows: with
    16 threads or more, on short batches); the original's beams then read their ancestor's copy."""
    beams = t.reshape(sentences, group, -1)
    return (beams[:, 1:] != beams[:, :1]).any()


def _select_rows(keys_t, rows):
    """keys_t's rows (its first dimension), laid out as keys_t is: copied transposed keys stay a copy, keys
    read in place (transposed views) stay so (index_select alone would give the first layout)."""
    if keys_t.is_contiguous():
        return keys_t.index_select(0, rows)
    return keys_t.transpose(1, 2).index_select(0, rows).transpose(1, 2)


def _shaped(buffer, shape):
    """A tensor of that shape in buffer's memory."""
    return buffer.new_empty(0).set_(buffer.untyped_storage(), 0, shape)


class TransformerModel(nn.Module):
    def __init__(self, config):
        super().__init__()
        c = self.config = config
        if c.emb_dim % c.n_heads:
            raise ValueError(f"emb_dim {c.emb_dim} must be a multiple of n_heads {c.n_heads}")
        self.is_decoder = c.is_decoder
        self.position_embeddings = embedding(c.n_positions, c.emb_dim)
        if c.sinusoidal_embeddings:
            self.position_embeddings.weight.data.copy_(sinusoidal_table(c.n_positions, c.emb_dim))
            self.position_embeddings.weight.requires_grad = False
        if c.has_lang_emb:
            self.lang_embeddings = embedding(c.n_langs, c.emb_dim)
        self.embeddings = embedding(c.n_words, c.emb_dim, padding_idx=c.pad_index)
        self.layer_norm_emb = nn.LayerNorm(c.emb_dim, eps=c.layer_norm_eps)

        self.attentions, self.layer_norm1 = nn.ModuleList(), nn.ModuleList()
        self.ffns, self.layer_norm2 = nn.ModuleList(), nn.ModuleList()
        if self.is_decoder:
            self.layer_norm15, self.encoder_attn = nn.ModuleList(), nn.ModuleList()
        self.memories = nn.ModuleDict({f"{layer}_{where}": HashingMemory(c.emb_dim, c.emb_dim, c.memory)
                                       for layer, where in c.mem_positions})
        for i in range(c.n_layers):
            self.attentions.append(MultiHeadAttention(c.n_heads, c.emb_dim, c.attention_dropout))
            self.layer_norm1.append(nn.LayerNorm(c.emb_dim, eps=c.layer_norm_eps))
            if self.is_decoder:
                self.layer_norm15.append(nn.LayerNorm(c.emb_dim, eps=c.layer_norm_eps))
                self.encoder_attn.append(MultiHeadAttention(c.n_heads, c.emb_dim, c.attention_dropout))
            # a memory "in" layer i replaces its FFN (the original keeps a None there: no ffns.i.* keys)
            ffn = None if f"{i}_in" in self.memories else TransformerFFN(c.emb_dim, 4 * c.emb_dim, c.dropout,
                                                                         c.gelu_activation)
            self.ffns.append(ffn)
            self.layer_norm2.append(nn.LayerNorm(c.emb_dim, eps=c.layer_norm_eps))

        self.pred_layer = PredLayer(c)
        if c.share_inout_emb and not c.asm:
            self.pred_layer.proj.weight = self.embeddings.weight

    def forward(self, x, lengths, langs=None, positions=None, causal=False, src_enc=None, src_len=None,
                pred_mask=None, y=None):
        """Last-layer hidden states (bs, slen, dim) of token ids x (bs, slen). With pred_mask, only
        those at pred_mask (n, dim): a boolean (bs, slen) mask, or the positions' indices in the
        flattened (bs * slen) rows (training makes them with the batch on the CPU: a boolean mask on
        the device makes the host wait for the number of positions). The last layer then computes
        the other positions only as keys and values, which saves most of its cost when few are
        wanted (MLM's 15%, the first token in classification). With targets y (n,) too, the
        mean cross-entropy of predicting them instead, so that a training step is one call (and one
        DistributedDataParallel forward).

        lengths (bs,): tokens of each row (the rest is padding, left out of all but attention on
        the CPU: `reads_on_host`; in evaluation, where the roundings allow: `rows_may_change`), or
        None when no row is padded (as in bptt streams), which lets attention use its fastest
        kernels. langs: (bs, slen) language ids, or one id for all tokens (ignored by models without
        language embeddings). positions: (bs, slen), default 0..slen-1. causal: each position sees
        only itself and earlier ones.
        src_enc (bs, src_len, dim) and src_len (bs,): the encoder output a decoder attends to.
        """
        bs, slen = x.shape
        device = x.device
        if lengths is not None:
            check_lengths(lengths, bs, slen)
        if positions is None:
            if slen > self.config.n_positions:
                raise ValueError(f"{slen} tokens in a row, but the model has {self.config.n_positions} positions")
            positions = torch.arange(slen, device=device).expand(bs, slen)
        if isinstance(langs, int):
            langs = torch.full_like(x, langs)
        rows = None
        if pred_mask is not None:
            rows = flat_positions(pred_mask) if pred_mask.dtype == torch.bool else pred_mask
        alen = torch.arange(slen, device=device)
        real = None if lengths is None else alen[None, :] < lengths[:, None]          # (bs, slen)
        on_host = reads_on_host(device)
        all_real = real is None or (on_host and bool(real.all()))
        if causal or all_real:
            # nothing to hide (no padding, seen for free on the CPU), or a causal query, which never sees
            # the padding after every real token
            attn_mask = None
        else:
            attn_mask = real[:, None, None, :]                                       # (bs, 1, 1, slen)
        has_langs = langs is not None and self.config.has_lang_emb
        packing = keep = None
        if on_host and not all_real:
            tokens = flat_positions(real)
            # evaluation packs only where the matmuls round each row as on the original's padded batch (the
            # output layer is not among them: it reads the predicted positions alone, as the original's)
            layers = (m for name, m in self.named_children() if name != "pred_layer")
            if self.training or rows_may_change(bs * slen, len(tokens), compute_dtype(self.embeddings.weight),
                                                matmul_shapes(*layers)):
                packing = Packing(tokens, bs, slen, self._packed_rows(len(tokens)))
        elif on_host and (n_rows := self._packed_rows(bs * slen)) != bs * slen:
            # no padding, but fewer rows than the linear layers pad to: packed, so that none of them copies
            packing = Packing(torch.arange(bs * slen, device=device), bs, slen, n_rows)
        if packing is not None:
            x, positions = packing.pack(x), packing.pack(positions)
            langs = packing.pack(langs) if has_langs else langs
        elif not all_real:
            keep = real.unsqueeze(-1)
        h = self._embed(x, self.position_embeddings(positions), self.lang_embeddings(langs) if has_langs else None)
        if keep is not None:
            h = h * keep.to(h.dtype)
        key_lengths = lengths if attn_mask is not None and not causal else None  # a padding mask
        cross = None
        if self.is_decoder and src_enc is not None:
            src_mask = (torch.arange(src_enc.shape[1], device=device)[None, :] < src_len[:, None])[:, None, None, :]

            def cross(i, h, rows):
                return self.encoder_attn[i](h, src_mask, kv=src_enc, kv_lengths=src_len, rows=rows, packing=packing)

        def attention(i, h, rows):
            return self.attentions[i](h, attn_mask, is_causal=causal, kv_lengths=key_lengths, rows=rows,
                                      packing=packing)

        h = self._layers(h, attention, cross, keep, rows, packing)
        if y is not None:
            return self.pred_layer.loss(h, y)
        return packing.pad(h) if packing is not None and rows is None else h

    def _packed_rows(self, n):
        """The rows of n packed tokens (`Packing`): the row count the linear layers pad to, where they pad
        (`pads_rows`), unless the model has memories, which would count reads of the copies in their usage
        statistics, and whose query batchnorm would average over them."""
        probe = self.attentions[0].out_lin.weight if self.attentions else self.embeddings.weight
        return bucket_rows(n) if pads_rows(probe) and not self.memories else n

    def _embed(self, x, position_embeddings, lang_embeddings):
        h = self.embeddings(x) + position_embeddings
        if lang_embeddings is not None:
            h = h + lang_embeddings
        return dropout(self.layer_norm_emb(h), self.config.dropout, self.training)

    def _layers(self, h, attention, cross_attention=None, keep=None, rows=None, packing=None):
        """The layers on h, attention(i, h, rows) and cross_attention(i, h, rows) being layer i's; keep:
        a mask of the positions that are not padding, zeroed after each layer. rows: the flattened
        positions wanted of the output; the last attention of the last layer gives only those, and
        all that follows it is computed on them alone. packing: h holds the real tokens alone."""
        def take(h, rows):  # the rows of h at these flattened positions, which are never padding
            return h.flatten(0, 1).index_select(0, rows) if packing is None else h.index_select(0, packing.find(rows))

        last = self.config.n_layers - 1
        if rows is not None and last < 0:  # no layer: the embeddings are the output
            return take(h, rows)
        if rows is not None and self.training and any(
                m.config.query_batchnorm for k, m in self.memories.items() if k.startswith(f"{last}_")):
            # a query batchnorm in the last layer takes its statistics over every token, as the original's
            return take(self._layers(h, attention, cross_attention, keep, None, packing), rows)
        for i in range(self.config.n_layers):
            self_rows = rows if i == last and cross_attention is None else None
            a = attention(i, h, self_rows)
            if self_rows is not None:
                h, keep = take(h, rows), None
            h = self.layer_norm1[i](h + dropout(a, self.config.dropout, self.training))
            if cross_attention is not None:
                cross_rows = rows if i == last else None
                a = cross_attention(i, h, cross_rows)
                if cross_rows is not None:
                    h, keep = take(h, rows), None
                h = self.layer_norm15[i](h + dropout(a, self.config.dropout, self.training))
            ffn = self.memories[f"{i}_in"] if self.ffns[i] is None else self.ffns[i]
            h = self.layer_norm2[i](h + ffn(h))
            if f"{i}_after" in self.memories:
                h = h + self.memories[f"{i}_after"](h)
            if keep is not None:
                h = h * keep.to(h.dtype)
        return h

    def start_decoding(self, src_enc, src_len, max_len, group=1):
        """The state of incremental decoding (see `step`) of up to max_len positions, by `group`
        consecutive rows (the beams) per sentence of the encoder output src_enc (bs, src_len, dim).
        Each row gets its own copy of its source's keys and values, as in the original: the same
        matmul shapes, hence the same roundings, as its decoding."""
        if group > 1:
            src_enc, src_len = src_enc.repeat_interleave(group, dim=0), src_len.repeat_interleave(group)
        padding = torch.arange(src_enc.shape[1], device=src_enc.device)[None, :] >= src_len[:, None]
        bias = src_enc.new_zeros(padding.shape, dtype=compute_dtype(src_enc)).masked_fill_(padding, -float("inf"))
        bias = bias[:, None, None, :]
        bias = bias.expand(-1, self.config.n_heads, 1, -1).flatten(0, 1)
        source = [a.source_keys_values(src_enc) for a in self.encoder_attn]
        apart = group > 1 and bool(torch.stack([_beams_apart(t, len(src_enc) // group, group)
                                                for kv in source for t in kv]).any())
        return DecodingState(source, bias, self.config.n_heads, min(max_len, self.config.n_positions),
                             projections=([a.side_by_side(compute_dtype(src_enc)) for a in self.attentions]
                                          if in_free_roundings() else None),
                             reorder_by_layer=src_enc.is_cpu, beams_share_source=not apart)

    def step(self, words, lang, state):
        """Last-layer hidden states (rows, dim) of the next position of each row, whose token ids there
        are words (rows,), the earlier positions' keys and values being in `state`, which it extends.
        lang: one language id. The same as `forward` on the prefixes (causal), one position at a time."""
        t = state.length
        if t == self.config.n_positions:
            raise ValueError(f"{t + 1} tokens in a row, but the model has {self.config.n_positions} positions")
        # rows of the tables indexed on the host: a device tensor of t would be a copy to the device per step
        h = self._embed(words, self.position_embeddings.weight[t],
                        self.lang_embeddings.weight[lang] if self.config.has_lang_emb else None)
        state.room(self.config, compute_dtype(h))  # the keys' and values' dtype, not autocast's input
        qkv = state.projections or [None] * self.config.n_layers
        h = self._layers(h, lambda i, h, _: self.attentions[i].step(h, *state.layer(i), t, qkv[i]),
                         lambda i, h, _: self.encoder_attn[i].step_cross(h, *state.source[i], state.source_bias))
        state.advance()
        return h

    def get_scores(self, h, out=None):
        return self.pred_layer.scores(h, out)
