"""Conversion between xlm checkpoints and Hugging Face transformers' XLM classes.

Parameter names are the same on both sides except for the `transformer.` prefix HF puts before the
body of XLMWithLMHeadModel. Vocabularies differ in convention: fastBPE marks non-final subwords with
`@@` (`hel@@`, `lo`), HF's XLM tokenizer marks final ones with `</w>` (`hel`, `lo</w>`).

The XLMConfig attributes that change what the model computes, and where xlm keeps each:
vocab_size, emb_dim, n_layers, n_heads, dropout, attention_dropout, gelu_activation,
sinusoidal_embeddings, n_langs, use_lang_emb (HF and the original both have no language embeddings
with one language), tie_word_embeddings (share_inout_emb): params keys of the same names.
max_position_embeddings and layer_norm_eps: `n_positions` and `layer_norm_eps`, which the original
fixes at 512 and 1e-12. causal: `causal` (xlm chooses causality per call, HF per model). Refused:
asm (adaptive softmax), is_encoder false (HF cannot build it either), special-token ids other than
the fixed ones of xlm's vocabulary. Initialisation (init_std, embed_init_std), the heads of the other
HF classes (summary_*, start/end_n_top) and generation settings (lang_id, mask_token_id) are not kept.
"""
import json
import os
import pickle

from ..data.dictionary import BOS_INDEX, EOS_INDEX, MASK_INDEX, N_RESERVED, PAD_INDEX, UNK_INDEX, Dictionary
from ..fileio import DataError, atomic_folder, check_output, check_output_file, check_output_folder, read_json
from .checkpoint import checkpoint_payload, config_from_params, load_model, load_weights, save_checkpoint
from .transformer import TransformerModel

HF_PREFIX = "transformer."
# the weight files XLMWithLMHeadModel.from_pretrained reads from a local folder, in its order of preference
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


def _transformers():
    try:
        import transformers
    except ImportError:
        raise DataError("converting to or from Hugging Face needs transformers: pip install 'xlm[hf]'") from None
    return transformers


def to_hf_word(word, index):
    if index < N_RESERVED:
        return word
    return word[:-2] if word.endswith("@@") else word + "</w>"


def from_hf_word(word, index):
    if index < N_RESERVED:
        return word
    return word[:-4] if word.endswith("</w>") else word + "@@"


def to_hf(checkpoint_path, out_dir, causal=False):
    """Write an HF XLMWithLMHeadModel (config, weights, vocab.json) from a pretrained checkpoint into a new
    folder `out_dir` (missing or empty): written beside it under a temporary name, renamed when complete."""
    transformers = _transformers()
    check_output_dir(out_dir)
    loaded = load_model(checkpoint_path)
    if loaded.decoder is not None:
        raise DataError(f"{checkpoint_path}: a translation (encoder-decoder) checkpoint; HF's XLM has no decoder")
    c = loaded.encoder.config
    if c.memory is not None or c.asm:
        raise DataError(f"{checkpoint_path}: product-key memories and adaptive softmax have no HF XLM equivalent")
    p = loaded.params
    lang2id = p.get("lang2id") or {"en": 0}
    hf_config = transformers.XLMConfig(
        vocab_size=c.n_words, emb_dim=c.emb_dim, n_layers=c.n_layers, n_heads=c.n_heads, dropout=c.dropout,
        attention_dropout=c.attention_dropout, gelu_activation=c.gelu_activation,
        sinusoidal_embeddings=c.sinusoidal_embeddings, causal=causal or bool(p.get("causal", False)), asm=False,
        n_langs=c.n_langs, use_lang_emb=c.use_lang_emb, max_position_embeddings=c.n_positions,
        layer_norm_eps=c.layer_norm_eps, bos_index=BOS_INDEX, eos_index=c.eos_index, pad_index=c.pad_index,
        unk_index=UNK_INDEX, mask_index=MASK_INDEX, lang2id=dict(lang2id),
        id2lang={int(i): lang for lang, i in lang2id.items()}, tie_word_embeddings=c.share_inout_emb)
    model = transformers.XLMWithLMHeadModel(hf_config)
    state = {(k if k.startswith("pred_layer.") else HF_PREFIX + k): v for k, v in loaded.encoder.state_dict().items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if [k for k in missing if not k.endswith("position_ids")] or unexpected:
        raise DataError(f"HF XLM does not fit: missing {missing}, unexpected {unexpected}")
    vocab = {to_hf_word(loaded.dico[i], i): i for i in range(len(loaded.dico))}
    with atomic_folder(out_dir) as tmp:
        model.save_pretrained(tmp)
        with open(os.path.join(tmp, "vocab.json"), "w", encoding="utf-8") as f:
            json.dump(vocab, f, ensure_ascii=False, indent=0)
        with open(os.path.join(tmp, "xlm_params.json"), "w", encoding="utf-8") as f:
            json.dump({k: _as_json(v) for k, v in p.items() if isinstance(v, (str, int, float, bool, list, dict,
                                                                              tuple, type(None)))}, f, indent=1)


def _as_json(value):
    """A params value as JSON: the original's params hold dicts keyed by language pairs (para_dataset,
    ref_paths), written "en-fr"; other objects as their text."""
    if isinstance(value, dict):
        return {"-".join(map(str, k)) if isinstance(k, tuple) else k if isinstance(k, (str, int, float, bool)) or
                k is None else str(k): _as_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_as_json(v) for v in value]
    return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)


def check_output_dir(out_dir):
    """Fail before any work, naming `out_dir`, if it cannot become a new output folder: it is a file, a
    folder with files in it (a conversion is never overwritten), below a file, or in a folder we cannot
    write in."""
    path = os.path.normpath(out_dir)
    if os.path.isdir(path):
        if os.listdir(path):
            raise DataError(f"{out_dir}: a folder that is not empty; to-hf writes a new folder (remove this one "
                            "or name another)")
    elif os.path.lexists(path):
        raise DataError(f"{out_dir}: exists and is not a folder")
    elif os.path.isdir(os.path.dirname(os.path.abspath(path))):
        check_output(path)  # the temporary folder is made beside it
    else:
        check_output_folder(path)  # the missing parents are made when the conversion is written


def check_hf_config(hc, hf_dir):
    """Refuse, in one message, what an xlm checkpoint cannot hold; returns lang2id."""
    problems = []
    sizes = ("vocab_size", "emb_dim", "n_layers", "n_heads", "n_langs", "max_position_embeddings")
    bad = [f"{k}={getattr(hc, k, None)!r}" for k in sizes
           if type(getattr(hc, k, None)) is not int or getattr(hc, k) < 1]
    if bad:
        raise DataError(f"{hf_dir}/config.json: {', '.join(bad)} (expected positive integers)")
    if hc.emb_dim % hc.n_heads:
        problems.append(f"emb_dim={hc.emb_dim} is not a multiple of n_heads={hc.n_heads}")
    if hc.asm:
        problems.append("asm=true (adaptive softmax) is not supported")
    if not hc.is_encoder:
        problems.append("is_encoder=false (HF's XLM is an encoder only)")
    special = dict(bos_index=BOS_INDEX, eos_index=EOS_INDEX, pad_index=PAD_INDEX, unk_index=UNK_INDEX,
                   mask_index=MASK_INDEX)
    wrong = [f"{k}={getattr(hc, k, None)} (xlm: {v})" for k, v in special.items() if getattr(hc, k, None) != v]
    if wrong:
        problems.append("special-token ids differ from xlm's fixed ones: " + ", ".join(wrong))
    lang2id = getattr(hc, "lang2id", None) or ({"en": 0} if hc.n_langs == 1 else {})
    ids = list(lang2id.values()) if isinstance(lang2id, dict) else None
    if ids is None or any(type(i) is not int for i in ids) or sorted(ids) != list(range(hc.n_langs)):
        problems.append(f"lang2id {lang2id} must name the n_langs={hc.n_langs} languages with ids 0..{hc.n_langs - 1}")
    if problems:
        raise DataError(f"{hf_dir}/config.json: " + "; ".join(problems))
    return dict(lang2id)


try:
    from huggingface_hub.errors import StrictDataclassError
    CONFIG_ERRORS = (OSError, ValueError, TypeError, StrictDataclassError)
except ImportError:
    CONFIG_ERRORS = (OSError, ValueError, TypeError)
# what reading a damaged weight file may raise, in transformers, safetensors or torch.load
WEIGHT_ERRORS = (OSError, ValueError, RuntimeError, EOFError, KeyError, pickle.UnpicklingError)


def _read_weights(transformers, hf_dir, weights_path):
    """XLMWithLMHeadModel.from_pretrained(hf_dir), its shapes checked against config.json; a damaged file is
    a DataError naming it. transformers' own report on mismatched shapes is not printed: the error lists them."""
    try:
        from safetensors import SafetensorError
        errors = WEIGHT_ERRORS + (SafetensorError,)
    except ImportError:
        errors = WEIGHT_ERRORS
    from transformers.utils import logging as hf_logging
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        hf, info = transformers.XLMWithLMHeadModel.from_pretrained(
            hf_dir, output_loading_info=True, ignore_mismatched_sizes=True, local_files_only=True)
    except errors as e:
        detail = str(e).strip().split("\n")[0] or type(e).__name__
        raise DataError(f"{weights_path}: cannot read the weights ({detail})") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    if info["missing_keys"]:
        raise DataError(f"{hf_dir}: not an XLMWithLMHeadModel, it lacks {', '.join(sorted(info['missing_keys']))}")
    mismatched = [f"{k}: file {tuple(a)} vs config.json {tuple(b)}" for k, a, b in sorted(info["mismatched_keys"])]
    if mismatched:
        raise DataError(f"{weights_path}: {len(mismatched)} tensors do not fit config.json: {'; '.join(mismatched[:3])}"
                        f"{' ...' if len(mismatched) > 3 else ''}")
    return hf


def from_hf(hf_dir, out_path):
    """Write a checkpoint of the original's layout from an HF XLMWithLMHeadModel folder with a vocab.json,
    to a new file `out_path` (as to-hf writes a new folder: nothing already there is replaced)."""
    transformers = _transformers()
    if os.path.isfile(out_path):
        raise DataError(f"{out_path}: exists; from-hf writes a new file (remove this one or choose another name)")
    if not os.path.exists(hf_dir):
        raise DataError(f"{hf_dir}: no such folder")
    if not os.path.isdir(hf_dir):
        raise DataError(f"{hf_dir}: not a folder; from-hf reads an HF model folder (config.json, weights, "
                        "vocab.json)")
    check_output_file(out_path)
    vocab_path = os.path.join(hf_dir, "vocab.json")
    if not os.path.isfile(vocab_path):
        raise DataError(f"{hf_dir}: no vocab.json; xlm checkpoints carry their vocabulary")
    vocab = read_json(vocab_path, dict)
    bad = [f"{w!r}: {i!r}" for w, i in vocab.items() if type(i) is not int]
    if bad:
        raise DataError(f"{vocab_path}: ids must be integers, not {', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}")
    words = sorted(vocab.items(), key=lambda wi: wi[1])
    if [i for _, i in words] != list(range(len(words))):
        raise DataError(f"{vocab_path}: ids must be 0..{len(words) - 1} without gaps")
    try:
        dico = Dictionary.from_words([(from_hf_word(w, i), 0) for w, i in words])
    except DataError as e:
        raise DataError(f"{vocab_path}: {e}") from None
    config_path = os.path.join(hf_dir, "config.json")
    read_json(config_path, dict)  # transformers' own errors are OSErrors of several lines
    try:
        hc = transformers.XLMConfig.from_pretrained(hf_dir, local_files_only=True)
    except CONFIG_ERRORS as e:  # transformers 5 checks the types of the attributes (emb_dim: "32")
        raise DataError(f"{config_path}: {' '.join(str(e).split()) or type(e).__name__}") from None
    lang2id = check_hf_config(hc, hf_dir)
    if len(dico) != hc.vocab_size:
        raise DataError(f"{hf_dir}: vocab.json has {len(dico)} words but the model {hc.vocab_size}")
    weights = [name for name in WEIGHT_FILES if os.path.isfile(os.path.join(hf_dir, name))]
    if not weights:
        raise DataError(f"{hf_dir}: no weights ({' nor '.join(WEIGHT_FILES[::2])})")
    hf = _read_weights(transformers, hf_dir, os.path.join(hf_dir, weights[0]))
    params = dict(emb_dim=hc.emb_dim, n_layers=hc.n_layers, n_heads=hc.n_heads, dropout=hc.dropout,
                  attention_dropout=hc.attention_dropout, gelu_activation=hc.gelu_activation,
                  share_inout_emb=bool(hc.tie_word_embeddings), sinusoidal_embeddings=hc.sinusoidal_embeddings,
                  use_lang_emb=hc.use_lang_emb, n_langs=hc.n_langs, asm=False, n_words=len(dico),
                  n_positions=hc.max_position_embeddings, layer_norm_eps=hc.layer_norm_eps, causal=hc.causal,
                  lang2id=lang2id, id2lang={i: lang for lang, i in lang2id.items()},
                  langs=sorted(lang2id, key=lang2id.get),
                  bos_index=BOS_INDEX, eos_index=EOS_INDEX, pad_index=PAD_INDEX, unk_index=UNK_INDEX,
                  mask_index=MASK_INDEX, encoder_only=True, use_memory=False)
    state = {k[len(HF_PREFIX):] if k.startswith(HF_PREFIX) else k: v for k, v in hf.state_dict().items()
             if not k.endswith("position_ids")}
    model = TransformerModel(config_from_params(params, len(dico)))
    load_weights(model, state)
    save_checkpoint(checkpoint_payload(dico, params, model=model), out_path)
