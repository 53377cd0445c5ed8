"""Product-key memory layers (Lample et al., 2019, "Large Memory Layers with Product Keys").

A memory reads `knn` of `n_keys**2` value slots per head: the query is split in two halves, each
half is scored against its own `n_keys` sub-keys, and the best `knn x knn` combinations of the two
top-k lists are rescored to keep the overall top `knn`. The paper's baseline, a flat memory
(`--mem_implementation flat`), scores the whole query against `n_keys` keys, one per value slot.
Parameter names (`keys`, `values.weight`, `query_proj.query_mlps.*`) are the original XLM's, so its
memory checkpoints load as they are.
"""
import math
import re
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..fileio import DataError
from .dropout import dropout


@dataclass
class MemoryConfig:
    """The original's `--mem_*` options (defaults included) that the product-key memory uses."""
    implementation: str = "pq_fast"
    k_dim: int = 256
    v_dim: int = -1
    heads: int = 4
    knn: int = 32
    n_keys: int = 512
    modulo_size: int = -1
    keys_type: str = "uniform"
    keys_normalized_init: bool = False
    keys_learn: bool = True
    use_different_keys: bool = True
    query_detach_input: bool = False
    query_layer_sizes: str = "0,0"
    query_bias: bool = True
    query_batchnorm: bool = False
    query_net_learn: bool = True
    value_zero_init: bool = False
    normalize_query: bool = False
    temperature: float = 1.0
    score_softmax: bool = True
    score_subtract: str = ""
    score_normalize: bool = False
    input_dropout: float = 0.0
    query_dropout: float = 0.0
    value_dropout: float = 0.0
    sparse: bool = False
    shuffle_indices: bool = False

    # what --help says of each
    HELP = {"implementation": "pq_fast or pq_default: product keys, the same computation; flat: n_keys keys, "
                              "each scored against the whole query",
            "k_dim": "dimension of a query (product keys: two halves, one per set of sub-keys)",
            "v_dim": "dimension of a value (-1: the layer's output)",
            "heads": "heads (queries) a memory reads with",
            "knn": "values each head reads (product keys: the best of knn x knn products of sub-keys)",
            "n_keys": "sub-keys per half: n_keys^2 values (flat: n_keys keys and values)",
            "modulo_size": "share the values: slot index modulo this (-1: a value per slot)",
            "keys_type": "initial keys: uniform, gaussian, or binary (flat memories of 2^k_dim keys: every "
                         "vector of +-1/sqrt(k_dim))",
            "keys_normalized_init": "initial sub-keys of unit norm",
            "keys_learn": "train the sub-keys",
            "use_different_keys": "sub-keys of each head its own",
            "query_detach_input": "no gradient into the layer below through the queries",
            "query_layer_sizes": "the query network's sizes, first and last 0 (the input, heads x k_dim); '': "
                                 "the input is the query",
            "query_bias": "biases in the query network",
            "query_batchnorm": "batch normalisation in the query network",
            "query_net_learn": "train the query network",
            "value_zero_init": "initial values 0 (else normal, std v_dim^-0.5)",
            "normalize_query": "queries of unit norm (product keys: each half)",
            "temperature": "divide the scores by this",
            "score_softmax": "softmax over each head's knn scores",
            "score_subtract": "subtract the scores' min, mean or median ('': nothing)",
            "score_normalize": "scores divided by their sum of magnitudes",
            "input_dropout": "dropout on the memory's input",
            "query_dropout": "dropout on the queries",
            "value_dropout": "dropout on the memory's output",
            "sparse": "sparse gradients of the values (an adam --mem_values_optimizer becomes sparse Adam)",
            "shuffle_indices": "each head maps the slots it finds to the values in its own random order"}

    # options of the original that only its image/experimental variants use: refused if set
    UNSUPPORTED = {"share_values": False, "input2d": False, "multi_query_net": False, "grouped_conv": False,
                   "shuffle_query": False, "query_residual": False,
                   "query_kernel_sizes": ""}

    @classmethod
    def from_params(cls, params):
        """From an original params dict (`mem_k_dim`, ...); missing keys take the defaults."""
        for name, default in cls.UNSUPPORTED.items():
            if params.get("mem_" + name, default) not in (default, None):
                raise DataError(f"product-key memory option --mem_{name} is not supported")
        kwargs = {f: params["mem_" + f] for f in cls.__dataclass_fields__ if "mem_" + f in params}
        if isinstance(kwargs.get("query_layer_sizes"), (list, tuple)):
            kwargs["query_layer_sizes"] = ",".join(map(str, kwargs["query_layer_sizes"]))
        config = cls(**kwargs)
        config.check()
        return config

    def check(self):
        for name in ("heads", "knn", "n_keys"):
            if getattr(self, name) < 1:
                raise DataError(f"--mem_{name} must be >= 1")
        if self.implementation not in ("pq_fast", "pq_default", "flat"):
            raise DataError(f"--mem_implementation {self.implementation}: use pq_fast, pq_default (product keys, "
                            "the same computation) or flat")
        if self.keys_type not in ("uniform", "gaussian", "binary"):
            raise DataError(f"--mem_keys_type {self.keys_type}: use uniform, gaussian or binary")
        if self.k_dim < 2:
            raise DataError(f"--mem_k_dim {self.k_dim}: a query has at least 2 dimensions")
        if self.product_keys and self.k_dim % 2:
            raise DataError("--mem_k_dim must be even: each half of the query scores one set of sub-keys")
        if self.keys_type == "binary":
            # the original's product keys would make 2^(k_dim/2) sub-keys of a half where n_keys must be
            # 2^k_dim: a query would reach a corner of the memory alone
            if self.product_keys:
                raise DataError("--mem_keys_type binary: with --mem_implementation flat only")
            if self.n_keys != 1 << self.k_dim or self.use_different_keys or self.keys_normalized_init:
                raise DataError(f"--mem_keys_type binary: every vector of +-1 in --mem_k_dim {self.k_dim} "
                                f"dimensions is a key, so --mem_n_keys must be {1 << self.k_dim}, with "
                                "--mem_use_different_keys false and --mem_keys_normalized_init false")
        if self.knn > self.n_keys:
            keys = "sub-keys of each half" if self.product_keys else "keys"
            raise DataError(f"--mem_knn {self.knn}: a query cannot select more than the --mem_n_keys {self.n_keys} "
                            f"{keys}")
        if not self.product_keys and self.use_different_keys and self.heads < 2:
            raise DataError("--mem_use_different_keys true: a flat memory with one head has one set of keys; "
                            "use --mem_heads >= 2 or --mem_use_different_keys false")
        if self.score_subtract not in ("", "min", "mean", "median") or (self.score_subtract and self.knn < 2):
            raise DataError("--mem_score_subtract must be '', min, mean or median, and needs --mem_knn >= 2")
        if self.score_normalize and self.score_softmax and not self.score_subtract:
            # as the original asserts: the softmax's weights already sum to 1
            raise DataError("--mem_score_normalize true rescales the scores after --mem_score_softmax, whose "
                            "weights already sum to 1: add --mem_score_subtract or --mem_score_softmax false")
        if self.temperature == 0:
            raise DataError("--mem_temperature 0: the scores are divided by it")
        for name in ("input_dropout", "query_dropout", "value_dropout"):
            if not 0 <= getattr(self, name) < 1:
                raise DataError(f"--mem_{name} must be in [0, 1)")
        try:
            sizes = self.layer_sizes
        except ValueError:
            raise DataError(f"--mem_query_layer_sizes {self.query_layer_sizes!r}: whole numbers separated by commas, "
                            "e.g. 0,512,0") from None
        if sizes and (len(sizes) < 2 or sizes[0] != 0 or sizes[-1] != 0 or min(sizes[1:-1], default=1) < 1):
            raise DataError("--mem_query_layer_sizes must start and end with 0, its hidden sizes >= 1 between, "
                            "e.g. 0,0 or 0,512,0, or be '' (no query network)")
        if not sizes and self.heads > 1 and not self.use_different_keys:
            raise DataError("--mem_query_layer_sizes '': with --mem_heads > 1, the heads' queries are the same "
                            "input; they need --mem_use_different_keys true")
        if self.modulo_size != -1 and not 1 <= self.modulo_size < self.n_indices:
            raise DataError(f"--mem_modulo_size must be -1 or in [1, {self.n_indices}) (the slots the keys index)")

    @property
    def layer_sizes(self):
        return [int(s) for s in str(self.query_layer_sizes).split(",") if s != ""]

    @property
    def product_keys(self):
        return self.implementation != "flat"

    @property
    def n_indices(self):
        """The slots the keys index: n_keys^2 products of sub-keys, or n_keys flat keys."""
        return self.n_keys ** 2 if self.product_keys else self.n_keys

    @property
    def size(self):
        """Number of value slots."""
        return self.n_indices if self.modulo_size == -1 else self.modulo_size


def parse_mem_positions(spec, n_layers, flag="mem_enc_positions"):
    """'4,7+' -> [(4, 'in'), (7, 'after')]: 'k' replaces the FFN of layer k, 'k+' adds a memory after it.
    Lists of (layer, 'in'|'after') pairs, as stored in the original's params, pass through."""
    if isinstance(spec, (list, tuple)):
        positions = [(int(k), str(p)) for k, p in spec]
    else:
        items = [s for s in spec.split(",") if s]
        for item in items:
            if not item.removesuffix("+").isdecimal():
                raise DataError(f"--{flag}: '{item}' is not a layer number, or a layer number and '+'")
            if items.count(item) > 1:
                raise DataError(f"--{flag}: '{item}' appears twice")
        positions = [(int(s[:-1]), "after") if s.endswith("+") else (int(s), "in") for s in items]
    for layer, where in positions:
        if not 0 <= layer < n_layers or where not in ("in", "after"):
            raise DataError(f"memory position {layer}{'+' if where == 'after' else ''} is not a layer of "
                            f"a {n_layers}-layer model")
    return positions


class QueryIdentity(nn.Module):
    """`--mem_query_layer_sizes ''`: no query network, the input itself is every head's query."""

    def __init__(self, heads):
        super().__init__()
        self.heads = heads

    def forward(self, x):
        return x.reshape(-1, x.shape[-1]).repeat_interleave(self.heads, dim=0)  # (n * heads, k_dim)


class QueryMLP(nn.Module):
    """Input -> `heads` queries of `k_dim`: Linear (+BatchNorm) layers with ReLU between them."""

    def __init__(self, input_dim, config):
        super().__init__()
        sizes = config.layer_sizes
        sizes[0], sizes[-1] = input_dim, config.heads * config.k_dim
        layers = []
        for i, (d_in, d_out) in enumerate(zip(sizes, sizes[1:])):
            layers.append(nn.Linear(d_in, d_out, bias=config.query_bias))
            if config.query_batchnorm:
                layers.append(nn.BatchNorm1d(d_out))
            if i < len(sizes) - 2:
                layers.append(nn.ReLU())
        # the original's parameter names: a single layer is `query_mlps.0.weight`, a deeper network sits in a
        # list of one (`query_mlps.0.0.weight`, `query_mlps.0.2.weight`, ...)
        if len(sizes) == 2:
            self.query_mlps = nn.Sequential(*layers)
        else:
            self.query_mlps = nn.ModuleList([nn.Sequential(*layers)])
        self.heads, self.k_dim = config.heads, config.k_dim

    def forward(self, x):
        net = self.query_mlps if isinstance(self.query_mlps, nn.Sequential) else self.query_mlps[0]
        return net(x.reshape(-1, x.shape[-1])).view(-1, self.k_dim)  # (n * heads, k_dim)


def rename_query_keys_of_before(model, state_dict):
    """xlm's checkpoints written before 2026-12-07 named a deeper query network's layers `query_mlps.<i>.*`,
    the original (and xlm since) `query_mlps.0.<i>.*`: such keys of `state_dict` renamed in place."""
    for prefix, module in model.named_modules():
        if isinstance(module, QueryMLP) and isinstance(module.query_mlps, nn.ModuleList):
            old = re.compile(re.escape(f"{prefix}.query_mlps.") + r"(\d+\.[a-z_]+)$")
            for key in [k for k in state_dict if old.match(k)]:
                state_dict[f"{prefix}.query_mlps.0.{old.match(key).group(1)}"] = state_dict.pop(key)


def _binary_keys(dim):
    """The 2^dim vectors of +-1/sqrt(dim), row i's coordinate j the sign of bit j of i (the original's order)."""
    bits = (torch.arange(1 << dim)[:, None] >> torch.arange(dim)[None, :]) & 1
    return (bits.float() * 2 - 1) / math.sqrt(dim)


def _random_keys(n, dim, config, seed):
    """Keys drawn as the original draws them, by numpy's generator with a fixed seed (in float64, then
    rounded): every memory of every run starts from the original's keys, whatever the run's seed (a draw of
    the same law from another generator would be one other start shared by all of xlm's runs)."""
    rng = np.random.RandomState(seed)
    if config.keys_type == "gaussian":  # unit variance, as the original's (unlike the uniform keys' bound)
        keys = rng.randn(n, dim)
    else:
        bound = 1 / math.sqrt(dim)
        keys = rng.uniform(-bound, bound, (n, dim))
    if config.keys_normalized_init:
        keys /= np.linalg.norm(keys, axis=1, keepdims=True)
    return torch.from_numpy(keys.astype(np.float32))


class HashingMemory(nn.Module):
    """A product-key (or flat) memory reading `input_dim` features and writing `output_dim` (or v_dim) ones."""

    def __init__(self, input_dim, output_dim, config):
        super().__init__()
        self.config = config
        self.v_dim = config.v_dim if config.v_dim > 0 else output_dim
        half = config.k_dim // 2
        if not config.product_keys:
            if config.keys_type == "binary":
                keys = _binary_keys(config.k_dim)                       # (n_keys, k_dim)
            elif config.use_different_keys:
                keys = torch.stack([_random_keys(config.n_keys, config.k_dim, config, h)
                                    for h in range(config.heads)])      # (heads, n_keys, k_dim)
            else:
                keys = _random_keys(config.n_keys, config.k_dim, config, 0)  # (n_keys, k_dim), shared by all
        elif config.use_different_keys:
            keys = torch.stack([torch.stack([_random_keys(config.n_keys, half, config, 2 * h + j) for j in range(2)])
                                for h in range(config.heads)])          # (heads, 2, n_keys, half)
        else:
            keys = _random_keys(config.n_keys, half, config, 0)         # (n_keys, half), shared by all
        if config.keys_learn:
            self.keys = nn.Parameter(keys)
        else:
            self.register_buffer("keys", keys)
        self.values = nn.EmbeddingBag(config.size, self.v_dim, mode="sum", sparse=config.sparse)
        if config.value_zero_init:
            nn.init.zeros_(self.values.weight)
        else:
            nn.init.normal_(self.values.weight, mean=0, std=self.v_dim ** -0.5)
        if not config.layer_sizes and input_dim != config.k_dim:
            raise DataError(f"--mem_query_layer_sizes '': the queries are the {input_dim} input features, so "
                            f"--mem_k_dim must be {input_dim}")
        self.query_proj = QueryMLP(input_dim, config) if config.layer_sizes else QueryIdentity(config.heads)
        if config.shuffle_indices:  # the original's buffer, saved with the weights, drawn as it draws them
            self.register_buffer("head_permutations", torch.stack(
                [torch.randperm(config.n_indices) for h in range(config.heads)]))
        if not config.query_net_learn:
            for p in self.query_proj.parameters():
                p.requires_grad = False

    def own_matmul_shapes(self):
        """The keys' scores' matmul (`_top_knn`), over the rows of the memory's input, for `matmul_shapes`."""
        c = self.config
        return [(c.k_dim // 2 if c.product_keys else c.k_dim, c.n_keys)]

    def _sub_keys(self, head):
        if self.config.use_different_keys:
            return self.keys[head, 0], self.keys[head, 1]
        return self.keys, self.keys

    def _top_knn(self, query, head):
        """Scores and indices of the `knn` best slots for (n, k_dim) queries of one head."""
        knn, n_keys = self.config.knn, self.config.n_keys
        if not self.config.product_keys:
            if self.config.normalize_query:
                query = F.normalize(query, dim=-1)
            keys = self.keys[head] if self.config.use_different_keys else self.keys
            return F.linear(query, keys).topk(knn, dim=1)
        q1, q2 = query.chunk(2, dim=-1)
        if self.config.normalize_query:
            q1, q2 = F.normalize(q1, dim=-1), F.normalize(q2, dim=-1)
        keys1, keys2 = self._sub_keys(head)
        s1, i1 = F.linear(q1, keys1).topk(knn, dim=1)                   # (n, knn) each
        s2, i2 = F.linear(q2, keys2).topk(knn, dim=1)
        all_scores = (s1.unsqueeze(2) + s2.unsqueeze(1)).flatten(1)      # (n, knn * knn)
        all_indices = (i1.unsqueeze(2) * n_keys + i2.unsqueeze(1)).flatten(1)
        scores, best = all_scores.topk(knn, dim=1)
        return scores, all_indices.gather(1, best)

    def forward(self, x):
        c = self.config
        prefix = x.shape[:-1]
        if c.query_detach_input:
            x = x.detach()
        x = dropout(x, c.input_dropout, self.training)
        query = dropout(self.query_proj(x), p=c.query_dropout, training=self.training)
        query = query.view(-1, c.heads, c.k_dim)                         # (n, heads, k_dim)
        per_head = [self._top_knn(query[:, h], h) for h in range(c.heads)]
        scores = torch.stack([s for s, _ in per_head], 1)                # (n, heads, knn)
        indices = torch.stack([i for _, i in per_head], 1)
        if c.shuffle_indices:
            indices = self.head_permutations[torch.arange(c.heads, device=indices.device)[:, None], indices]
        if c.modulo_size != -1:
            indices = indices % c.modulo_size
        if c.temperature != 1:
            scores = scores / c.temperature
        if c.score_softmax:
            scores = F.softmax(scores.float(), dim=-1).type_as(scores)
        if c.score_subtract == "min":
            scores = scores - scores.min(-1, keepdim=True).values
        elif c.score_subtract == "mean":
            scores = scores - scores.mean(-1, keepdim=True)
        elif c.score_subtract == "median":
            scores = scores - scores.median(-1, keepdim=True).values
        if c.score_normalize:
            scores = scores / scores.norm(p=1, dim=-1, keepdim=True)
        n = indices.shape[0]
        out = self.values(indices.view(n, -1), per_sample_weights=scores.reshape(n, -1).to(self.values.weight.dtype))
        out = dropout(out.to(scores.dtype), p=c.value_dropout, training=self.training)
        return out.view(*prefix, self.v_dim)
