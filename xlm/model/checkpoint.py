"""Checkpoints in the original XLM's layout, loaded without trusting the file.

A checkpoint is a dict: `model` (a pretrained model) or `encoder` + `decoder` (a translation model)
state dicts with the original's parameter names, `params` (the run's options), and the vocabulary as
`dico_id2word` / `dico_word2id` / `dico_counts`; training checkpoints add optimizer states and counters.
Files are read with `torch.load(weights_only=True)` and an allow-list of the plain numpy types the
original's `params` contain: anything else is refused, and nothing in the file runs.
"""
import os
import pickle
from dataclasses import dataclass

import numpy as np
import torch

from ..data.dictionary import Dictionary
from ..fileio import DataError, atomic_write, check_file
from .memory import MemoryConfig, parse_mem_positions
from .transformer import N_MAX_POSITIONS, TransformerConfig, TransformerModel

try:
    from numpy._core.multiarray import _reconstruct, scalar
except ImportError:  # numpy < 2
    from numpy.core.multiarray import _reconstruct, scalar

# numpy arrays and scalars (e.g. params['mask_scores']), under both numpy 1 and numpy 2 module names
_NUMPY_GLOBALS = [np.ndarray, np.dtype] + [type(np.dtype(t)) for t in "?bBhHiIlLqQefdgFDG"]
for _module in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _NUMPY_GLOBALS += [(_reconstruct, f"{_module}._reconstruct"), (scalar, f"{_module}.scalar")]


def read_checkpoint(path):
    """The dict of a .pth file, loaded safely on CPU; a clear DataError for anything unexpected."""
    check_file(path)
    try:
        with torch.serialization.safe_globals(_NUMPY_GLOBALS):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        reason = str(e).split("\n\n")[1].strip() if "\n\n" in str(e) else str(e)
        raise DataError(f"{path}: refusing to load, the file holds objects outside the allow-list of plain "
                        f"types ({reason.splitlines()[0]})") from None
    except (RuntimeError, EOFError, ValueError) as e:
        raise DataError(f"{path}: not a readable checkpoint ({e})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a dict, found {type(data).__name__}")
    return data


def strip_module_prefix(state_dict):
    """Remove the `module.` that DistributedDataParallel puts before every key (if all have it)."""
    if state_dict and all(k.startswith("module.") for k in state_dict):
        return {k[len("module."):]: v for k, v in state_dict.items()}
    return dict(state_dict)


def dico_from_checkpoint(data, path=""):
    try:
        id2word, word2id, counts = data["dico_id2word"], data["dico_word2id"], data["dico_counts"]
    except KeyError as e:
        raise DataError(f"{path}: no vocabulary in the checkpoint (missing {e})") from None
    return Dictionary({int(i): w for i, w in id2word.items()}, dict(word2id), dict(counts))


def _int_list(value):
    return [int(v) for v in value.split(",") if v] if isinstance(value, str) else [int(v) for v in value]


def config_from_params(params, n_words, is_decoder=False):
    """A TransformerConfig from the original's params dict (older files lack the later keys; the original's
    own lack `n_positions` and `layer_norm_eps`, which only models converted from Hugging Face set)."""
    required = ["emb_dim", "n_layers", "n_heads"]
    missing = [k for k in required if k not in params]
    if missing:
        raise DataError(f"checkpoint params lack {', '.join(missing)}")
    use_memory = params.get("use_memory", False)
    config = TransformerConfig(
        n_words=n_words, emb_dim=params["emb_dim"], n_layers=params["n_layers"], n_heads=params["n_heads"],
        dropout=params.get("dropout", 0.0), attention_dropout=params.get("attention_dropout", 0.0),
        gelu_activation=params.get("gelu_activation", False), share_inout_emb=params.get("share_inout_emb", True),
        sinusoidal_embeddings=params.get("sinusoidal_embeddings", False),
        use_lang_emb=params.get("use_lang_emb", True), n_langs=params.get("n_langs", 1), is_decoder=is_decoder,
        asm=params.get("asm", False), asm_cutoffs=tuple(_int_list(params.get("asm_cutoffs", "8000,20000"))),
        asm_div_value=params.get("asm_div_value", 4.0),
        memory=MemoryConfig.from_params(params) if use_memory else None,
        mem_positions=parse_mem_positions(params.get("mem_dec_positions" if is_decoder else "mem_enc_positions", ""),
                                          params["n_layers"]) if use_memory else [],
        pad_index=params.get("pad_index", 2), eos_index=params.get("eos_index", 1),
        n_positions=params.get("n_positions", N_MAX_POSITIONS), layer_norm_eps=params.get("layer_norm_eps", 1e-12))
    return config


def _hint(key):
    if key.startswith(("embeddings.", "pred_layer.")):
        return " (vocabulary size)"
    if key.startswith("lang_embeddings."):
        return " (number of languages)"
    if key.startswith("position_embeddings."):
        return " (position table)"
    return " (model dimension)"


def load_weights(model, state_dict, name="model"):
    """Load a state dict strictly; one error listing every missing, unexpected or misshapen key."""
    state_dict = strip_module_prefix(state_dict)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}{_hint(k)}"
              for k, v in expected.items() if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)]
    problems = []
    if missing:
        problems.append(f"missing keys: {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
    if unexpected:
        problems.append(f"unexpected keys: {', '.join(unexpected[:8])}{' ...' if len(unexpected) > 8 else ''}")
    if shapes:
        problems.append("shape mismatch: " + "; ".join(shapes[:8]))
    if problems:
        raise DataError(f"the {name} weights do not fit the model: " + " | ".join(problems))
    model.load_state_dict(state_dict)


@dataclass
class LoadedModel:
    encoder: TransformerModel
    decoder: TransformerModel  # None for a pretrained (single) model
    dico: Dictionary
    params: dict


def load_model(path):
    """Load a checkpoint of the original's layout (pretrained or translation) on CPU, in eval mode.

    Returns `.encoder`, `.decoder` (None for a pretrained model), `.dico` and `.params`. Move the
    models to a device with `.to(device)`.
    """
    data = read_checkpoint(path)
    params = dict(data.get("params") or {})
    dico = dico_from_checkpoint(data, path)
    n_words = len(dico)
    if params.get("n_words", n_words) != n_words:
        raise DataError(f"{path}: params say n_words={params['n_words']} but the vocabulary has {n_words} words")
    if "model" in data:
        parts = [("model", False)]
    elif "encoder" in data and "decoder" in data:
        parts = [("encoder", False), ("decoder", True)]
    else:
        raise DataError(f"{path}: no 'model' nor 'encoder'/'decoder' weights")
    models = []
    for key, is_decoder in parts:
        model = TransformerModel(config_from_params(params, n_words, is_decoder))
        try:
            load_weights(model, data[key], key)
        except DataError as e:
            raise DataError(f"{path}: {e}") from None
        models.append(model.eval())
    return LoadedModel(models[0], models[1] if len(models) > 1 else None, dico, params)


def checkpoint_payload(dico, params, model=None, encoder=None, decoder=None, **extra):
    """The dict the original writes (and reads): weights, params and the vocabulary."""
    payload = {}
    if model is not None:
        payload["model"] = model.state_dict()
    else:
        payload["encoder"], payload["decoder"] = encoder.state_dict(), decoder.state_dict()
    payload.update(dico_id2word=dict(dico.id2word), dico_word2id=dict(dico.word2id),
                   dico_counts=dict(dico.counts), params=dict(params), **extra)
    return payload


def save_checkpoint(payload, path):
    """torch.save atomically: a crash while writing leaves the previous file intact."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_write(path) as f:
        torch.save(payload, f)
