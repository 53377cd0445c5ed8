"""Conversion between xlm checkpoints and Hugging Face transformers' XLM classes.

Parameter names are the same on both sides except for the `transformer.` prefix HF puts before the
body of XLMWithLMHeadModel. Vocabularies differ in convention: fastBPE marks non-final subwords with
`@@` (`hel@@`, `lo`), HF's XLM tokenizer marks final ones with `</w>` (`hel`, `lo</w>`).
"""
import json
import os


from ..data.dictionary import N_RESERVED, Dictionary
from ..fileio import DataError
from .checkpoint import checkpoint_payload, config_from_params, load_model, load_weights, save_checkpoint
from .transformer import TransformerModel

HF_PREFIX = "transformer."


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
    """Write an HF XLMWithLMHeadModel (config, weights, vocab.json) from a pretrained checkpoint."""
    transformers = _transformers()
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
        sinusoidal_embeddings=c.sinusoidal_embeddings, causal=causal, asm=False, n_langs=c.n_langs,
        use_lang_emb=c.use_lang_emb, max_position_embeddings=512, layer_norm_eps=1e-12,
        bos_index=0, eos_index=c.eos_index, pad_index=c.pad_index, unk_index=3, mask_index=5,
        lang2id=dict(lang2id), id2lang={int(i): l for l, i in lang2id.items()},
        tie_word_embeddings=c.share_inout_emb)
    model = transformers.XLMWithLMHeadModel(hf_config)
    state = {(k if k.startswith("pred_layer.") else HF_PREFIX + k): v for k, v in loaded.encoder.state_dict().items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if [k for k in missing if not k.endswith("position_ids")] or unexpected:
        raise DataError(f"HF XLM does not fit: missing {missing}, unexpected {unexpected}")
    model.save_pretrained(out_dir)
    vocab = {to_hf_word(loaded.dico[i], i): i for i in range(len(loaded.dico))}
    with open(os.path.join(out_dir, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False, indent=0)
    with open(os.path.join(out_dir, "xlm_params.json"), "w", encoding="utf-8") as f:
        json.dump({k: v for k, v in p.items() if isinstance(v, (str, int, float, bool, list, dict, type(None)))},
                  f, indent=1, default=str)


def from_hf(hf_dir, out_path):
    """Write a checkpoint of the original's layout from an HF XLM model folder with a vocab.json."""
    transformers = _transformers()
    vocab_path = os.path.join(hf_dir, "vocab.json")
    if not os.path.isfile(vocab_path):
        raise DataError(f"{hf_dir}: no vocab.json; xlm checkpoints carry their vocabulary")
    with open(vocab_path, encoding="utf-8") as f:
        vocab = json.load(f)
    words = sorted(vocab.items(), key=lambda wi: wi[1])
    if [i for _, i in words] != list(range(len(words))):
        raise DataError(f"{vocab_path}: ids must be 0..{len(words) - 1} without gaps")
    entries = [(from_hf_word(w, i), 0) for w, i in words]
    dico = Dictionary.from_words(entries)
    hf = transformers.XLMWithLMHeadModel.from_pretrained(hf_dir)
    hc = hf.config
    if hc.asm:
        raise DataError(f"{hf_dir}: adaptive softmax models are not supported")
    if len(dico) != hc.vocab_size:
        raise DataError(f"{hf_dir}: vocab.json has {len(dico)} words but the model {hc.vocab_size}")
    lang2id = dict(hc.lang2id or {"en": 0})
    params = dict(emb_dim=hc.emb_dim, n_layers=hc.n_layers, n_heads=hc.n_heads, dropout=hc.dropout,
                  attention_dropout=hc.attention_dropout, gelu_activation=hc.gelu_activation,
                  share_inout_emb=bool(getattr(hc, "tie_word_embeddings", True)),
                  sinusoidal_embeddings=hc.sinusoidal_embeddings, use_lang_emb=hc.use_lang_emb, n_langs=hc.n_langs,
                  asm=False, n_words=len(dico), lang2id=lang2id, id2lang={i: l for l, i in lang2id.items()},
                  langs=sorted(lang2id, key=lang2id.get), bos_index=0, eos_index=hc.eos_index,
                  pad_index=hc.pad_index, unk_index=3, mask_index=5, encoder_only=True, use_memory=False)
    state = {k[len(HF_PREFIX):] if k.startswith(HF_PREFIX) else k: v for k, v in hf.state_dict().items()
             if not k.endswith("position_ids")}
    model = TransformerModel(config_from_params(params, len(dico)))
    load_weights(model, state)
    save_checkpoint(checkpoint_payload(dico, params, model=model), out_path)
