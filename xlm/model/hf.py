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

from ..data.dictionary import BOS_INDEX, EOS_INDEX, MASK_INDEX, N_RESERVED, PAD_INDEX, UNK_INDEX, Dictionary
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
    model.save_pretrained(out_dir)
    vocab = {to_hf_word(loaded.dico[i], i): i for i in range(len(loaded.dico))}
    with open(os.path.join(out_dir, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False, indent=0)
    with open(os.path.join(out_dir, "xlm_params.json"), "w", encoding="utf-8") as f:
        json.dump({k: v for k, v in p.items() if isinstance(v, (str, int, float, bool, list, dict, type(None)))},
                  f, indent=1, default=str)


def check_hf_config(hc, hf_dir):
    """Refuse, in one message, what an xlm checkpoint cannot hold; returns lang2id."""
    problems = []
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
    if sorted(lang2id.values()) != list(range(hc.n_langs)):
        problems.append(f"lang2id {lang2id} must name the n_langs={hc.n_langs} languages with ids 0..{hc.n_langs - 1}")
    if problems:
        raise DataError(f"{hf_dir}/config.json: " + "; ".join(problems))
    return dict(lang2id)


def from_hf(hf_dir, out_path):
    """Write a checkpoint of the original's layout from an HF XLMWithLMHeadModel folder with a vocab.json."""
    transformers = _transformers()
    vocab_path = os.path.join(hf_dir, "vocab.json")
    if not os.path.isfile(vocab_path):
        raise DataError(f"{hf_dir}: no vocab.json; xlm checkpoints carry their vocabulary")
    with open(vocab_path, encoding="utf-8") as f:
        vocab = json.load(f)
    words = sorted(vocab.items(), key=lambda wi: wi[1])
    if [i for _, i in words] != list(range(len(words))):
        raise DataError(f"{vocab_path}: ids must be 0..{len(words) - 1} without gaps")
    try:
        dico = Dictionary.from_words([(from_hf_word(w, i), 0) for w, i in words])
    except DataError as e:
        raise DataError(f"{vocab_path}: {e}") from None
    hc = transformers.XLMConfig.from_pretrained(hf_dir)
    lang2id = check_hf_config(hc, hf_dir)
    if len(dico) != hc.vocab_size:
        raise DataError(f"{hf_dir}: vocab.json has {len(dico)} words but the model {hc.vocab_size}")
    hf, info = transformers.XLMWithLMHeadModel.from_pretrained(hf_dir, output_loading_info=True)
    if info["missing_keys"]:
        raise DataError(f"{hf_dir}: not an XLMWithLMHeadModel, it lacks {', '.join(sorted(info['missing_keys']))}")
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
