import contextlib
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import xlm
from xlm.data.dictionary import SPECIAL_WORDS
from xlm.fileio import DataError
from xlm.model.checkpoint import load_weights, read_checkpoint
from xlm.model.generate import generate_beam, generate_greedy
from xlm.model import attention, linear as linear_module, transformer
from xlm.model.linear import bucket_rows, free_roundings
from xlm.model.transformer import TransformerConfig, TransformerModel


WORDS = SPECIAL_WORDS + [f"w{i}" if i % 2 else f"w{i}@@" for i in range(36)]  # 50 words


def padded_batch(n_words, lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor(lengths)
    x = torch.randint(4, n_words, (len(lengths), int(lengths.max())), generator=g)
    x[torch.arange(x.shape[1])[None, :] >= lengths[:, None]] = 2
    return x, lengths


def original_state_dict(n_words, dim, n_layers, n_langs, decoder=False, prefix=""):
    """Keys and shapes from the reference's table of the original's state dict (section 5.2)."""
    g = torch.Generator().manual_seed(1)
    shapes = {"position_embeddings.weight": (512, dim), "embeddings.weight": (n_words, dim),
              "layer_norm_emb.weight": (dim,), "layer_norm_emb.bias": (dim,), "pred_layer.proj.bias": (n_words,)}
    if n_langs > 1:
        shapes["lang_embeddings.weight"] = (n_langs, dim)
    for i in range(n_layers):
        attentions = ["attentions"] + (["encoder_attn"] if decoder else [])
        for a in attentions:
            for lin in ("q_lin", "k_lin", "v_lin", "out_lin"):
                shapes[f"{a}.{i}.{lin}.weight"], shapes[f"{a}.{i}.{lin}.bias"] = (dim, dim), (dim,)
        norms = ["layer_norm1", "layer_norm2"] + (["layer_norm15"] if decoder else [])
        for ln in norms:
            shapes[f"{ln}.{i}.weight"], shapes[f"{ln}.{i}.bias"] = (dim,), (dim,)
        shapes[f"ffns.{i}.lin1.weight"], shapes[f"ffns.{i}.lin1.bias"] = (4 * dim, dim), (4 * dim,)
        shapes[f"ffns.{i}.lin2.weight"], shapes[f"ffns.{i}.lin2.bias"] = (dim, 4 * dim), (dim,)
    state = {k: torch.randn(s, generator=g) * 0.1 for k, s in shapes.items()}
    state["pred_layer.proj.weight"] = state["embeddings.weight"]  # tied: both keys are saved
    return {prefix + k: v for k, v in state.items()}


def original_params(**kw):
    """A params dict like the original's, including its numpy and tensor values."""
    params = dict(emb_dim=32, n_layers=2, n_heads=4, dropout=0.1, attention_dropout=0.1, gelu_activation=True,
                  share_inout_emb=True, sinusoidal_embeddings=False, asm=False, n_langs=2, n_words=len(WORDS),
                  langs=["en", "fr"], id2lang={0: "en", 1: "fr"}, lang2id={"en": 0, "fr": 1},
                  mlm_steps=[("en", None), ("en", "fr")], pred_probs=torch.FloatTensor([0.8, 0.1, 0.1]),
                  mask_scores=np.maximum(np.arange(len(WORDS)), 1) ** -0.0, sample_alpha=np.float64(0.0),
                  command="python train.py --exp_name x", dump_path="/checkpoint/x")
    params.update(kw)
    return params


def vocab_entries():
    return dict(dico_id2word=dict(enumerate(WORDS)), dico_word2id={w: i for i, w in enumerate(WORDS)},
                dico_counts={w: (0 if i < 14 else 100 - i) for i, w in enumerate(WORDS)})


def test_loads_a_pretrained_checkpoint_of_the_original_layout(tmp_path):
    path = tmp_path / "mlm_enfr.pth"
    # saved from DistributedDataParallel: every key has the 'module.' prefix
    torch.save({"model": original_state_dict(len(WORDS), 32, 2, 2, prefix="module."), "params": original_params(),
                **vocab_entries()}, path)
    loaded = xlm.load_model(path)
    assert loaded.decoder is None and len(loaded.dico) == len(WORDS) and loaded.params["lang2id"]["fr"] == 1
    x, lengths = padded_batch(len(WORDS), [6, 3])
    h = loaded.encoder(x, lengths, langs=torch.ones_like(x))
    assert h.shape == (2, 6, 32) and torch.all(h[1, 3:] == 0) and torch.isfinite(h).all()
    assert not loaded.encoder.training


def test_loads_a_translation_checkpoint_and_decodes(tmp_path):
    path = tmp_path / "mt.pth"
    torch.save({"encoder": original_state_dict(len(WORDS), 32, 2, 2), "params": original_params(encoder_only=False),
                "decoder": original_state_dict(len(WORDS), 32, 2, 2, decoder=True), **vocab_entries()}, path)
    loaded = xlm.load_model(path)
    x, lengths = padded_batch(len(WORDS), [6, 3])
    src = loaded.encoder(x, lengths, langs=0)
    out, out_len = generate_greedy(loaded.decoder, src, lengths, tgt_lang_id=1, max_len=10)
    beam, beam_len = generate_beam(loaded.decoder, src, lengths, 1, beam_size=3, max_len=10)
    assert out[:, 0].tolist() == [1, 1] and all(out[i, out_len[i] - 1] == 1 for i in range(2))
    assert beam.shape[0] == 2 and all(beam[i, beam_len[i] - 1] == 1 for i in range(2))


def test_mismatches_are_named(tmp_path):
    state = original_state_dict(len(WORDS) + 5, 32, 2, 2)
    torch.save({"model": state, "params": original_params(n_words=len(WORDS)), **vocab_entries()}, tmp_path / "a.pth")
    with pytest.raises(DataError, match=r"embeddings.weight: checkpoint \(55, 32\) vs model \(50, 32\) "
                                        r"\(vocabulary size\)"):
        xlm.load_model(tmp_path / "a.pth")
    torch.save({"model": original_state_dict(len(WORDS), 32, 3, 2), "params": original_params(), **vocab_entries()},
               tmp_path / "b.pth")
    with pytest.raises(DataError, match=r"unexpected keys: attentions.2.q_lin.weight"):
        xlm.load_model(tmp_path / "b.pth")
    torch.save({"model": original_state_dict(len(WORDS), 32, 2, 3), "params": original_params(), **vocab_entries()},
               tmp_path / "c.pth")
    with pytest.raises(DataError, match=r"lang_embeddings.weight: checkpoint \(3, 32\) vs model \(2, 32\) "
                                        r"\(number of languages\)"):
        xlm.load_model(tmp_path / "c.pth")


class Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned_by_checkpoint",))


def test_malicious_checkpoint_is_refused(tmp_path):
    torch.save({"model": {}, "params": Exploit(), **vocab_entries()}, tmp_path / "evil.pth")
    with pytest.raises(DataError, match="refusing to load.*posix.system"):
        read_checkpoint(tmp_path / "evil.pth")
    assert not os.path.exists("pwned_by_checkpoint") and not (tmp_path / "pwned_by_checkpoint").exists()


def test_memory_layers_train_and_load_with_original_names(tmp_path):
    params = original_params(use_memory=True, mem_enc_positions=[(0, "after"), (1, "in")], mem_k_dim=16,
                             mem_heads=2, mem_knn=4, mem_n_keys=8, mem_query_batchnorm=False)
    from xlm.model.checkpoint import config_from_params
    model = TransformerModel(config_from_params(params, len(WORDS)))
    names = set(model.state_dict())
    assert {"memories.0_after.keys", "memories.0_after.values.weight", "memories.1_in.query_proj.query_mlps.0.weight",
            "memories.1_in.query_proj.query_mlps.0.bias", "ffns.0.lin1.weight"} <= names
    assert not any(k.startswith("ffns.1.") for k in names)  # the memory replaces layer 1's FFN
    assert model.memories["1_in"].values.weight.shape == (64, 32) and model.memories["1_in"].keys.shape == (2, 2, 8, 8)
    x, lengths = padded_batch(len(WORDS), [7, 5])
    model(x, lengths, langs=0, pred_mask=x > 3, y=x[x > 3]).backward()
    for where in ("0_after", "1_in"):
        memory = model.memories[where]
        grads = [memory.keys.grad, memory.values.weight.grad, memory.query_proj.query_mlps[0].weight.grad]
        assert all(g is not None and g.abs().sum() > 0 for g in grads)
    torch.save({"model": model.state_dict(), "params": params, **vocab_entries()}, tmp_path / "pkm.pth")
    loaded = xlm.load_model(tmp_path / "pkm.pth")
    torch.testing.assert_close(loaded.encoder(x, lengths, langs=0), model.eval()(x, lengths, langs=0))


def test_checkpoints_hold_model_flags_in_the_forms_the_originals_loaders_read(tmp_path):
    """The original's translate.py and glue-xnli.py build a checkpoint's model from its params as its
    train.py parsed them: xlm writes --asm_cutoffs, the memory positions and query sizes that way, with the
    sizes it derives; a dict already in those forms passes unchanged, and xlm reads either back."""
    from xlm.data.dictionary import Dictionary
    from xlm.model.checkpoint import checkpoint_payload, config_from_params, parsed_model_flags
    from xlm.train.options import parse_params
    params = vars(parse_params([
        "--exp_name", "x", "--data_path", str(tmp_path), "--lgs", "en-fr", "--encoder_only", "false",
        "--mt_steps", "en-fr", "--emb_dim", "32", "--n_layers", "2", "--n_heads", "4", "--asm", "true",
        "--asm_cutoffs", "20,35", "--share_inout_emb", "false", "--use_memory", "true", "--mem_enc_positions", "0+",
        "--mem_dec_positions", "1", "--mem_n_keys", "8", "--mem_k_dim", "16", "--mem_heads", "2", "--mem_knn", "4",
        "--mem_query_layer_sizes", "0,64,0"]))
    dico = Dictionary(dict(enumerate(WORDS)), {w: i for i, w in enumerate(WORDS)},
                      {w: (0 if i < 14 else 100 - i) for i, w in enumerate(WORDS)})
    encoder = TransformerModel(config_from_params({**params, "n_langs": 2}, len(WORDS)))
    decoder = TransformerModel(config_from_params({**params, "n_langs": 2}, len(WORDS), is_decoder=True))
    saved = checkpoint_payload(dico, {**params, "n_langs": 2}, encoder=encoder, decoder=decoder)["params"]
    assert saved["asm_cutoffs"] == [20, 35] and saved["mem_query_layer_sizes"] == [0, 64, 0]
    assert saved["mem_enc_positions"] == [(0, "after")] and saved["mem_dec_positions"] == [(1, "in")]
    assert (saved["n_indices"], saved["mem_size"], saved["mem_product_quantization"]) == (64, 64, True)
    assert parsed_model_flags(saved) == saved
    torch.save({"encoder": encoder.state_dict(), "decoder": decoder.state_dict(), "params": saved,
                "dico_id2word": dico.id2word, "dico_word2id": dico.word2id, "dico_counts": dico.counts},
               tmp_path / "mt.pth")
    loaded = xlm.load_model(tmp_path / "mt.pth")
    assert loaded.decoder.config.mem_positions == [(1, "in")] and loaded.encoder.config.asm_cutoffs == (20, 35)


def test_shuffled_memory_indices_read_each_heads_slots_through_its_permutation():
    """--mem_shuffle_indices: the original's `head_permutations` buffer (heads, n_keys^2), saved with the
    weights, maps the slots each head finds to its values; with one permutation for every head, that reads
    the values a memory without it holds in the permuted order."""
    from xlm.model.memory import HashingMemory, MemoryConfig
    config = dict(k_dim=16, heads=2, knn=4, n_keys=8)
    shuffled = HashingMemory(32, 32, MemoryConfig(**config, shuffle_indices=True))
    assert "head_permutations" in shuffled.state_dict() and shuffled.head_permutations.shape == (2, 64)
    assert sorted(shuffled.head_permutations[0].tolist()) == list(range(64))
    # drawn as the original draws them, by torch's generator at the model's build: each memory its own, and
    # another seed others
    def built(seed):
        torch.manual_seed(seed)
        return [HashingMemory(32, 32, MemoryConfig(**config, shuffle_indices=True)).head_permutations
                for _ in range(2)]
    first, second = built(4)
    assert torch.equal(built(4)[0], first) and not torch.equal(first, second) and not torch.equal(built(5)[0], first)
    permutation = torch.randperm(64, generator=torch.Generator().manual_seed(1))
    shuffled.head_permutations.copy_(permutation.expand(2, 64))
    plain = HashingMemory(32, 32, MemoryConfig(**config))
    plain.load_state_dict({k: v for k, v in shuffled.state_dict().items() if k != "head_permutations"})
    with torch.no_grad():
        plain.values.weight.copy_(shuffled.values.weight[permutation])
    x = torch.randn(3, 5, 32)
    torch.testing.assert_close(shuffled.eval()(x), plain.eval()(x))


def test_a_deeper_query_network_has_the_originals_names(tmp_path):
    """--mem_query_layer_sizes 0,48,0: the original keeps the network in a list of one
    (`query_mlps.0.0.weight`, `query_mlps.0.2.weight`); xlm's checkpoints of before (`query_mlps.0.weight`,
    `query_mlps.2.weight`) still load."""
    from xlm.model.checkpoint import config_from_params
    params = original_params(use_memory=True, mem_enc_positions=[(0, "after")], mem_k_dim=16, mem_heads=2,
                             mem_knn=4, mem_n_keys=8, mem_query_layer_sizes="0,48,0", mem_query_batchnorm=True)
    model = TransformerModel(config_from_params(params, len(WORDS)))
    names = {k.split("query_mlps.")[1] for k in model.state_dict() if "query_mlps" in k}
    assert names == {"0.0.weight", "0.0.bias", "0.1.weight", "0.1.bias", "0.1.running_mean", "0.1.running_var",
                     "0.1.num_batches_tracked", "0.3.weight", "0.3.bias", "0.4.weight", "0.4.bias",
                     "0.4.running_mean", "0.4.running_var", "0.4.num_batches_tracked"}
    before = {k.replace("query_mlps.0.", "query_mlps."): v for k, v in model.state_dict().items()}
    again = TransformerModel(config_from_params(params, len(WORDS)))
    load_weights(again, before)
    for k, v in model.state_dict().items():
        assert torch.equal(again.state_dict()[k], v), k


@pytest.mark.parametrize("keys_type", ["gaussian", "uniform"])
def test_memory_keys_start_at_the_originals_scale(keys_type):
    """The original's sub-keys: numpy's standard normal (variance 1), or uniform in +-1/sqrt(k_dim / 2) as
    nn.Linear; gaussian keys divided by that root made the scores over the memory slots 8x flatter here."""
    from xlm.model.checkpoint import config_from_params
    params = original_params(use_memory=True, mem_enc_positions=[(0, "after")], mem_k_dim=128, mem_heads=2,
                             mem_knn=4, mem_n_keys=256, mem_keys_type=keys_type)
    keys = TransformerModel(config_from_params(params, len(WORDS))).memories["0_after"].keys.detach()
    expected = 1.0 if keys_type == "gaussian" else (1 / 64 ** 0.5) / 3 ** 0.5
    assert abs(keys.std().item() / expected - 1) < 0.02


@pytest.mark.parametrize("keys_type,normalized", [("uniform", False), ("gaussian", False), ("uniform", True)])
def test_memory_keys_are_the_originals_draws(keys_type, normalized):
    """The original draws the sub-keys of head h, half j with numpy's RandomState(2h + j), whatever the run's
    seed: each run starts from those very keys (uniform in +-1/sqrt(half), or standard normal; rows of unit
    norm with --mem_keys_normalized_init), rounded to float32 after the draw."""
    import numpy as np
    from xlm.model.checkpoint import config_from_params
    params = original_params(use_memory=True, mem_enc_positions=[(0, "after")], mem_k_dim=16, mem_heads=2,
                             mem_knn=4, mem_n_keys=12, mem_keys_type=keys_type, mem_keys_normalized_init=normalized)
    torch.manual_seed(7)
    keys = TransformerModel(config_from_params(params, len(WORDS))).memories["0_after"].keys.detach()
    for h in range(2):
        for j in range(2):
            rng = np.random.RandomState(2 * h + j)
            draw = rng.randn(12, 8) if keys_type == "gaussian" else rng.uniform(-8 ** -0.5, 8 ** -0.5, (12, 8))
            if normalized:
                draw /= np.linalg.norm(draw, axis=1, keepdims=True)
            assert torch.equal(keys[h, j], torch.from_numpy(draw.astype(np.float32)))


def test_memory_without_a_query_network_reads_the_input_as_every_heads_query():
    """--mem_query_layer_sizes '' (the original's QueryIdentity): no query weights; each head's query is the
    input itself, which must then have --mem_k_dim features."""
    from xlm.model.checkpoint import config_from_params
    params = original_params(use_memory=True, mem_enc_positions=[(0, "in")], mem_k_dim=32, mem_heads=2, mem_knn=4,
                             mem_n_keys=8, mem_query_layer_sizes="")
    model = TransformerModel(config_from_params(params, len(WORDS)))
    assert not any("query_proj" in k for k in model.state_dict())
    memory = model.memories["0_in"]
    x = torch.randn(3, 5, 32)
    assert torch.equal(memory.query_proj(x), x.reshape(15, 1, 32).expand(15, 2, 32).reshape(30, 32))
    x, lengths = padded_batch(len(WORDS), [6, 4])
    model(x, lengths, langs=0, pred_mask=x > 3, y=x[x > 3]).backward()
    assert memory.keys.grad.abs().sum() > 0
    with pytest.raises(DataError, match="--mem_k_dim must be 32"):
        TransformerModel(config_from_params({**params, "mem_k_dim": 16}, len(WORDS)))
    with pytest.raises(DataError, match="need --mem_use_different_keys true"):
        TransformerModel(config_from_params({**params, "mem_use_different_keys": False}, len(WORDS)))


def flat_memory(**kw):
    from xlm.model.memory import HashingMemory, MemoryConfig
    config = MemoryConfig(**{**dict(implementation="flat", k_dim=8, heads=2, knn=3, n_keys=20), **kw})
    config.check()
    torch.manual_seed(0)
    return HashingMemory(16, 16, config)


@pytest.mark.parametrize("kw", [{}, dict(use_different_keys=False, keys_type="gaussian", normalize_query=True),
                                dict(k_dim=4, n_keys=16, keys_type="binary", use_different_keys=False)],
                         ids=["per-head keys", "shared, normalized queries", "binary keys"])
def test_a_flat_memory_reads_the_values_of_its_best_keys(kw):
    """--mem_implementation flat (the paper's baseline): each head scores its whole query against every key
    and reads the values of the knn best, weighted by the softmax of their scores; computed here row by
    row and head by head."""
    memory = flat_memory(**kw)
    c = memory.config
    x = torch.randn(5, 16)
    with torch.no_grad():
        queries = memory.query_proj(x).view(5, c.heads, c.k_dim)
        expected = torch.zeros(5, 16)
        for row in range(5):
            for head in range(c.heads):
                q = queries[row, head]
                if c.normalize_query:
                    q = q / q.norm()
                keys = memory.keys[head] if c.use_different_keys else memory.keys
                best = (keys @ q).topk(c.knn)
                for w, i in zip(best.values.softmax(0), best.indices):
                    expected[row] += w * memory.values.weight[i]
        torch.testing.assert_close(memory(x), expected)
    assert memory.values.weight.shape == (c.n_keys, 16) and c.size == c.n_keys


def test_a_flat_memorys_keys_are_the_originals():
    """Its keys as the original makes them: head h's drawn by numpy's RandomState(h) (shared ones by
    RandomState(0)), uniform in +-1/sqrt(k_dim); binary keys every vector of +-1/sqrt(k_dim), coordinate j of
    row i the sign of bit j of i."""
    per_head = flat_memory().keys.detach()
    for h in range(2):
        draw = np.random.RandomState(h).uniform(-8 ** -0.5, 8 ** -0.5, (20, 8)).astype(np.float32)
        assert torch.equal(per_head[h], torch.from_numpy(draw))
    binary = flat_memory(k_dim=3, n_keys=8, keys_type="binary", use_different_keys=False).keys.detach()
    expected = [[(1 if i >> j & 1 else -1) / 3 ** 0.5 for j in range(3)] for i in range(8)]
    torch.testing.assert_close(binary, torch.tensor(expected, dtype=torch.float32))


@pytest.mark.parametrize("kw, message", [
    (dict(implementation="dense"), "use pq_fast, pq_default"),
    (dict(implementation="pq_fast", keys_type="binary", use_different_keys=False), "with --mem_implementation flat"),
    (dict(keys_type="binary", use_different_keys=False), "--mem_n_keys must be 256"),
    (dict(keys_type="binary", k_dim=4, n_keys=16), "--mem_use_different_keys false"),
    (dict(heads=1), "a flat memory with one head has one set of keys"),
    (dict(modulo_size=20), r"--mem_modulo_size must be -1 or in \[1, 20\)"),
    (dict(k_dim=1), "--mem_k_dim 1: a query has at least 2 dimensions"),
    (dict(k_dim=0), "--mem_k_dim 0: a query has at least 2 dimensions"),
])
def test_flat_memory_flags_that_cannot_work(kw, message):
    with pytest.raises(DataError, match=message):
        flat_memory(**kw)


@pytest.mark.parametrize("kw, message", [
    (dict(score_normalize=True), "add --mem_score_subtract or --mem_score_softmax false"),
    (dict(temperature=0.0), "--mem_temperature 0: the scores are divided by it"),
    (dict(input_dropout=1.0), r"--mem_input_dropout must be in \[0, 1\)"),
    (dict(query_dropout=-0.1), r"--mem_query_dropout must be in \[0, 1\)"),
    (dict(value_dropout=1.5), r"--mem_value_dropout must be in \[0, 1\)"),
    (dict(query_layer_sizes="0,-3,0"), "its hidden sizes >= 1 between"),
    (dict(query_layer_sizes="0,a,0"), "'0,a,0': whole numbers separated by commas"),
    (dict(n_keys=0), "--mem_n_keys must be >= 1"),
])
def test_memory_flags_the_original_asserts_against(kw, message):
    """Refused with a message where the original's check_params asserts (or a dropout of -0.1 crashed in
    the random draw of its mask); the accepted neighbours pass."""
    from xlm.model.memory import MemoryConfig
    with pytest.raises(DataError, match=message):
        MemoryConfig(**{**dict(k_dim=16, heads=2, knn=4, n_keys=8), **kw}).check()
    for accepted in (dict(score_normalize=True, score_softmax=False), dict(score_normalize=True, score_subtract="min"),
                     dict(temperature=-1.0), dict(input_dropout=0.9), dict(query_layer_sizes="0,,0")):
        MemoryConfig(**{**dict(k_dim=16, heads=2, knn=4, n_keys=8), **accepted}).check()


def test_a_last_layer_memorys_query_batchnorm_sees_every_token():
    """The last layer computes only the predicted rows; a memory there with --mem_query_batchnorm would take its
    batch statistics over those alone (one row: a crash), where the original's take every token."""
    from xlm.model.checkpoint import config_from_params
    params = original_params(use_memory=True, mem_enc_positions=[(1, "in")], mem_k_dim=8, mem_heads=1, mem_knn=4,
                             mem_n_keys=8, mem_query_batchnorm=True, dropout=0.0, attention_dropout=0.0)
    torch.manual_seed(0)
    model = TransformerModel(config_from_params(params, len(WORDS)))
    whole = TransformerModel(config_from_params(params, len(WORDS)))
    whole.load_state_dict(model.state_dict())
    x = torch.randint(4, len(WORDS), (2, 9))
    pred_mask = torch.zeros_like(x, dtype=torch.bool)
    pred_mask[1, 3] = True
    torch.testing.assert_close(model(x, None, langs=0, pred_mask=pred_mask), whole(x, None, langs=0)[pred_mask])
    norms = [m.memories["1_in"].query_proj.query_mlps[1] for m in (model, whole)]
    torch.testing.assert_close(norms[0].running_mean, norms[1].running_mean)


def test_sinusoidal_adaptive_softmax_and_encoder_contract():
    config = TransformerConfig(n_words=len(WORDS), emb_dim=32, n_layers=1, n_heads=4, sinusoidal_embeddings=True,
                               asm=True, asm_cutoffs=(20, 35), asm_div_value=2.0)
    model = TransformerModel(config)
    pos = model.state_dict()["position_embeddings.weight"]
    assert not model.position_embeddings.weight.requires_grad
    assert torch.allclose(pos[3, 0], torch.tensor(np.sin(3.0), dtype=torch.float32))
    assert torch.allclose(pos[3, 1], torch.tensor(np.cos(3.0), dtype=torch.float32))
    assert {"pred_layer.proj.head.weight", "pred_layer.proj.head.bias"} <= set(model.state_dict())
    x, lengths = padded_batch(len(WORDS), [5, 4])
    h = model(x, lengths)
    assert h.shape == (2, 5, 32)
    loss = model(x, lengths, pred_mask=x > 3, y=x[x > 3])
    assert torch.isfinite(loss) and model.get_scores(h[:, 0]).shape == (2, len(WORDS))


def test_lengths_that_do_not_fit_the_batch_are_refused():
    """The original's asserts: a batch in its (length, batch) layout, or lengths past the rows, fail at once
    rather than giving wrong vectors or an IndexError."""
    model = TransformerModel(TransformerConfig(n_words=len(WORDS), emb_dim=32, n_layers=1, n_heads=4))
    x, lengths = padded_batch(len(WORDS), [5, 3])
    with pytest.raises(ValueError, match=r"lengths of shape \(2,\) for x of 5 rows of 2 tokens: one length per row "
                                         r"\(x is \(batch, length\), not the original XLM's \(length, batch\)\)"):
        model(x.t(), lengths)
    with pytest.raises(ValueError, match="a length of 9 for rows of 5 tokens"):
        model(x, torch.tensor([9, 3]))
    assert model(x, lengths).shape == (2, 5, 32)


@pytest.mark.parametrize("causal", [False, True])
def test_unpadded_fast_path_equals_the_masked_one(causal):
    model = TransformerModel(TransformerConfig(n_words=len(WORDS), emb_dim=32, n_layers=2, n_heads=4, n_langs=2))
    x, lengths = padded_batch(len(WORDS), [7, 7, 7])
    torch.testing.assert_close(model(x, None, langs=1, causal=causal), model(x, lengths, langs=1, causal=causal))


@pytest.mark.parametrize("on_host", [True, False], ids=["cpu", "cuda_path"])
@pytest.mark.parametrize("kind", ["padded", "stream", "causal", "decoder", "memory", "no_layer", "first_tokens"])
def test_wanted_positions_alone_give_the_full_model_output(kind, on_host, monkeypatch):
    """With pred_mask, the last layer computes only the wanted positions past its keys and values (on the
    CPU, its queries too, `_at_rows`): the loss and every gradient are those of taking the positions from
    the full output."""
    monkeypatch.setattr(transformer, "reads_on_host", lambda device: on_host)
    from xlm.model.memory import MemoryConfig
    from xlm.model.embedder import sentence_vectors
    kw = dict(n_words=len(WORDS), emb_dim=32, n_layers=2, n_heads=4, n_langs=2, gelu_activation=True)
    if kind == "memory":
        kw.update(memory=MemoryConfig(k_dim=16, heads=2, knn=4, n_keys=8, query_batchnorm=False),
                  mem_positions=[(1, "in"), (1, "after")])
    if kind == "no_layer":
        kw["n_layers"] = 0
    torch.manual_seed(0)
    model = TransformerModel(TransformerConfig(**kw, is_decoder=kind == "decoder"))
    x, lengths = padded_batch(len(WORDS), [9, 9, 9] if kind == "stream" else [9, 6, 3, 7])
    extra = {}
    if kind == "decoder":
        extra = dict(causal=True, src_enc=torch.randn(4, 5, 32), src_len=torch.tensor([5, 2, 4, 3]))
    lengths = None if kind == "stream" else lengths
    pred_mask = (x > 20) & (torch.arange(9) > 0)
    if kind == "first_tokens":
        pred_mask = torch.arange(9)[None, :].expand(4, 9) == 0
    y = x[pred_mask]

    def loss_and_grads(wanted_only):
        model.zero_grad()
        if wanted_only:
            loss = model(x, lengths, langs=1, pred_mask=pred_mask.flatten().nonzero().squeeze(1), y=y, **extra)
        else:
            loss = model.pred_layer.loss(model(x, lengths, langs=1, **extra)[pred_mask], y)
        loss.backward()
        return loss, {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}

    full, fast = loss_and_grads(False), loss_and_grads(True)
    torch.testing.assert_close(fast[0], full[0])
    assert fast[1].keys() == full[1].keys() and len(full[1]) > 5
    for name in full[1]:
        torch.testing.assert_close(fast[1][name], full[1][name], msg=name)
    if kind == "first_tokens":
        torch.testing.assert_close(sentence_vectors(model, x, lengths, langs=1), model(x, lengths, langs=1)[:, 0])


@pytest.mark.parametrize("emb_dim", [32, 128])
@pytest.mark.parametrize("kind", ["padded", "causal", "decoder", "memory"])
def test_packed_padding_gives_the_padded_model_output(onednn, kind, emb_dim, monkeypatch):
    """On the CPU the padding is left out of all but attention (packed rows; at 128 dimensions, through
    oneDNN, with copies of the first token up to a bucket size): the hidden states, the loss and every
    gradient are those of the path that computes the padding and zeroes it (CUDA's)."""
    from xlm.model.memory import MemoryConfig
    kw = dict(n_words=len(WORDS), emb_dim=emb_dim, n_layers=2, n_heads=4, n_langs=2, gelu_activation=True)
    if kind == "memory":
        kw.update(memory=MemoryConfig(k_dim=16, heads=2, knn=4, n_keys=8, query_batchnorm=False),
                  mem_positions=[(0, "in"), (1, "after")])
    torch.manual_seed(0)
    model = TransformerModel(TransformerConfig(**kw, is_decoder=kind == "decoder"))
    x, lengths = padded_batch(len(WORDS), [9, 6, 3, 7])
    extra = dict(causal=kind in ("causal", "decoder"))
    if kind == "decoder":
        extra.update(src_enc=torch.randn(4, 5, emb_dim), src_len=torch.tensor([5, 2, 4, 3]))
    positions = torch.arange(9).expand(4, 9) % 5  # not the default, so that packing them counts
    pred_mask = (x > 20) & (torch.arange(9) > 0)

    def run():
        model.zero_grad()
        h = model(x, lengths, langs=1, positions=positions, **extra)
        loss = model(x, lengths, langs=1, positions=positions, pred_mask=flat(pred_mask), y=x[pred_mask], **extra)
        loss.backward()
        return h, loss, {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}

    def flat(mask):
        return mask.flatten().nonzero().squeeze(1)

    packed = run()
    monkeypatch.setattr(transformer, "reads_on_host", lambda device: False)  # as on CUDA
    padded = run()
    torch.testing.assert_close(packed[0], padded[0])
    assert packed[0][torch.arange(9)[None, :] >= lengths[:, None]].abs().max() == 0
    torch.testing.assert_close(packed[1], padded[1])
    assert packed[2].keys() == padded[2].keys()
    for name in padded[2]:
        torch.testing.assert_close(packed[2][name], padded[2][name], msg=name)


@pytest.mark.parametrize("batch,real,rows", [("padded", 25, 26), ("unpadded", 35, 36), ("stream", 35, 36)])
@pytest.mark.parametrize("grad", [True, False], ids=["training", "free_roundings"])
def test_packed_rows_come_to_a_bucket_size_so_no_layer_copies_them(onednn, grad, batch, real, rows,
                                                                  monkeypatch):
    """Where oneDNN pads a linear layer's rows to a bucket size (training, `free_roundings`), the packed
    tokens come at that size already (the real tokens and copies of the first), also where no row is
    padded but their number is not a bucket size (given lengths or none): no layer copies its input to
    pad it, nor its output's gradient; the hidden states are those of rows padded by each layer."""
    torch.manual_seed(0)
    model = TransformerModel(TransformerConfig(n_words=len(WORDS), emb_dim=128, n_layers=2, n_heads=4, n_langs=2))
    x, lengths = padded_batch(len(WORDS), [9, 6, 3, 7] if batch == "padded" else [7] * 5)
    lengths = None if batch == "stream" else lengths
    copies, pad_rows = [], linear_module._pad_rows
    monkeypatch.setattr(linear_module, "_pad_rows",
                        lambda t, m: (copies.append(len(t)) if len(t) != m else None) or pad_rows(t, m))
    packings, packing = [], transformer.Packing
    monkeypatch.setattr(transformer, "Packing", lambda *a: packings.append(a) or packing(*a))

    def run():
        copies.clear(), packings.clear()
        model.zero_grad()
        with torch.set_grad_enabled(grad), contextlib.nullcontext() if grad else free_roundings():
            h = model(x, lengths, langs=1)
            if grad:
                (h * torch.randn(h.shape, generator=torch.Generator().manual_seed(1))).sum().backward()
        return h, {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}

    h, grads = run()
    assert [(len(p[0]), p[3]) for p in packings] == [(real, rows)] and copies == []
    monkeypatch.setattr(transformer, "pads_rows", lambda weight: False)
    h_padded_by_layers, grads_padded_by_layers = run()
    assert [p[3] for p in packings] == ([real] if batch == "padded" else []) and copies
    assert torch.equal(h, h_padded_by_layers)
    assert grads.keys() == grads_padded_by_layers.keys() and (len(grads) > 5 if grad else not grads)
    for name in grads:
        torch.testing.assert_close(grads[name], grads_padded_by_layers[name], msg=name)
    # no copies where memories would count their reads and average their queries over them
    from xlm.model.memory import MemoryConfig
    monkeypatch.setattr(transformer, "pads_rows", linear_module.pads_rows)
    memory = TransformerModel(TransformerConfig(n_words=len(WORDS), emb_dim=128, n_layers=1, n_heads=4, n_langs=2,
                                                memory=MemoryConfig(k_dim=16, heads=2, knn=4, n_keys=8),
                                                mem_positions=[(0, "after")]))
    packings.clear()
    with torch.set_grad_enabled(grad), contextlib.nullcontext() if grad else free_roundings():
        memory(x, lengths, langs=1)
    assert [p[3] for p in packings] == ([real] if batch == "padded" else [])


class FreshTensors(TorchDispatchMode):
    """The number of elements of every tensor an operation allocates (not views, not in-place or out=)."""

    def __init__(self):
        super().__init__()
        self.sizes = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if isinstance(out, torch.Tensor) and all(r.alias_info is None for r in func._schema.returns):
            self.sizes.append(out.numel())
        return out


@pytest.mark.parametrize("n_words,emb_dim,rows", [(37, 16, 9), (40, 16, 9), (131, 128, 37), (136, 128, 41)])
def test_training_loss_with_the_vocabulary_padded(onednn, n_words, emb_dim, rows):
    """The loss pads the vocabulary to a multiple of 8 columns (-inf logits), and at 128 dimensions (oneDNN's
    matmuls, xlm/model/linear.py) its rows to a bucket size (targets left out): the same loss and gradients
    as the cross-entropy of the plain projection, targets at the last word included."""
    torch.manual_seed(0)
    model = TransformerModel(TransformerConfig(n_words=n_words, emb_dim=emb_dim, n_layers=1, n_heads=2))
    h = torch.randn(rows, emb_dim, requires_grad=True)
    y = torch.tensor([n_words - 1, 0, 5, n_words - 2, 1, 3, n_words - 1, 7, 2] * (rows // 9) + [4] * (rows % 9))

    def loss_and_grads(loss_fn):
        model.zero_grad()
        h.grad = None
        loss = loss_fn()
        loss.backward()
        return [loss] + [t.grad.clone() for t in (h, model.pred_layer.proj.weight, model.pred_layer.proj.bias)]

    fresh = FreshTensors()
    with fresh:
        padded = loss_and_grads(lambda: model.pred_layer.loss(h, y))
    proj = model.pred_layer.proj
    plain = loss_and_grads(lambda: F.cross_entropy(F.linear(h, proj.weight, proj.bias), y))
    for a, b in zip(padded, plain):
        torch.testing.assert_close(a, b)
    assert padded[1].shape == (rows, emb_dim) and padded[2].shape == (n_words, emb_dim)
    # the logits, their softmax and their gradient share one (rows, words) tensor, through oneDNN and MKL alike
    # (F.cross_entropy of a linear layer makes four: logits, log-softmax, the loss's gradient, the logits')
    logits = (bucket_rows(rows) if emb_dim >= 128 else rows) * (n_words + -n_words % transformer.VOCAB_MULTIPLE)
    assert fresh.sizes.count(logits) == 1, fresh.sizes


@pytest.mark.parametrize("causal", [False, True])
def test_evaluation_attention_in_slices_of_rows_is_bit_for_bit(causal, monkeypatch):
    """Evaluation's attention over a long batch runs in slices of rows (bounded memory): the same values bit
    for bit as over the whole batch, padding masks, causal masks and keys of another length included."""
    torch.manual_seed(0)
    bs, qlen, klen = 9, 37, 37 if causal else 23
    q, k, v = torch.randn(bs, 4, qlen, 8), torch.randn(bs, 4, klen, 8), torch.randn(bs, 4, klen, 8)
    lengths = torch.randint(1, klen + 1, (bs,))
    mask = None if causal else (torch.arange(klen)[None, :] < lengths[:, None])[:, None, None, :]
    whole = attention.original_attention(q, k, v, mask, causal)
    monkeypatch.setattr(attention, "ATTENTION_SLICE_BYTES", 2 * 4 * qlen * klen * 4)  # 2 rows a slice
    assert torch.equal(attention.original_attention(q, k, v, mask, causal), whole)
    model = TransformerModel(TransformerConfig(n_words=50, emb_dim=16, n_layers=2, n_heads=2)).eval()
    x, lengths = torch.randint(5, 50, (bs, qlen)), torch.randint(2, qlen + 1, (bs,))
    with torch.no_grad():
        sliced = model(x, lengths, causal=causal)
        monkeypatch.setattr(attention, "ATTENTION_SLICE_BYTES", 2 ** 40)
        assert torch.equal(model(x, lengths, causal=causal), sliced)
