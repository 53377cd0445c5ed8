"""A pretrained model as a sentence encoder, as the original's XNLI/GLUE fine-tuning uses it.

The sentence vector is the last layer's hidden state at position 0 (the leading `</s>`), and
`--finetune_layers 'i:j'` chooses which parts of the model are trained: 0 is the embeddings
(tokens, positions, languages and their LayerNorm), k the k-th Transformer layer, `_` a minus sign.
"""
import torch

from ..fileio import DataError


def sentence_vectors(model, x, lengths, langs=None, positions=None):
    """(batch, dim): the last layer at the first position of each row (the only one it computes)."""
    bs, slen = x.shape
    first = torch.arange(bs, device=x.device) * slen
    return model(x, lengths, langs=langs, positions=positions, pred_mask=first)


def parse_layer_range(spec, n_layers):
    """'i:j' -> (i, j) with negative indices resolved (-1 is the last layer), as the original."""
    parts = spec.split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        i, j = (int(s.replace("_", "-")) for s in parts)
    except ValueError:
        raise DataError(f"--finetune_layers: '{spec}' is not 'i:j' (e.g. 0:_1 for everything)") from None
    i, j = (n_layers + k + 1 if k < 0 else k for k in (i, j))
    if not (0 <= i <= n_layers and 0 <= j <= n_layers):
        raise DataError(f"--finetune_layers: '{spec}' is outside 0..{n_layers} for a {n_layers}-layer model")
    return i, j


def finetuned_parameters(model, spec):
    """The parameters `--finetune_layers spec` trains: the embeddings when i == 0, then layers
    max(i, 1)..j (1-based). Nothing when i > j. A layer's product-key memory is trained with it
    (the original forgot it: its memories were never fine-tuned)."""
    i, j = parse_layer_range(spec, model.config.n_layers)
    if i > j:
        return []
    modules = []
    if i == 0:
        modules += [model.embeddings, model.position_embeddings, model.layer_norm_emb]
        modules += [model.lang_embeddings] if hasattr(model, "lang_embeddings") else []
    for layer in range(max(i - 1, 0), j):
        modules += [model.attentions[layer], model.layer_norm1[layer], model.layer_norm2[layer]]
        modules += [model.ffns[layer]] if model.ffns[layer] is not None else []
        modules += [m for name, m in model.memories.items() if name.split("_")[0] == str(layer)]
    # sinusoidal position tables are fixed (requires_grad False) and stay so
    return [p for m in modules for p in m.parameters() if p.requires_grad]


def freeze_all_but(model, parameters):
    """requires_grad only for `parameters`, so that frozen weights get no gradient and cannot change."""
    keep = {id(p) for p in parameters}
    for p in model.parameters():
        p.requires_grad = id(p) in keep
