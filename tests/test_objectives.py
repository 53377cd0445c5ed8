"""The LM objectives (xlm/objectives/lm.py) against the original's rules, written out below on the
original's time-major (slen, bs) numpy arrays from its trainer.py, utils.py and evaluator.py; and
fp16 / bf16 training steps through train.py.

xlm's batches are batch-first (bs, slen): every comparison transposes. Where the original takes
`x[pred_mask]` over (slen, bs), its targets are in position-major order; xlm's are row-major. The
losses are means over the targets, so the order does not change them (checked below)."""
import math
import re
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from conftest import python
from test_train import losses_of, scores_of
from xlm.data.binarized import binarize
from xlm.data.datasets import batch_sentences
from xlm.data.dictionary import MASK_INDEX, N_RESERVED, SPECIAL_WORDS, Dictionary
from xlm.evaluation.lm import _stack, eval_targets
from xlm.model.checkpoint import read_checkpoint
from xlm.model.transformer import TransformerConfig, TransformerModel
from xlm.objectives.lm import MaskingConfig, clm_targets, concat_pair, mask_for_eval, mask_for_training

PAD, EOS = 2, 1
P_VALUE = 1e-4  # chi-square tests: seeded, so a pass is reproducible; a wrong rule fails by far


def sentences(n_words, lengths, seed):
    """A batch_sentences Batch of random words (never a special token) with these word counts."""
    rng = np.random.default_rng(seed)
    return batch_sentences([rng.integers(N_RESERVED, n_words, n) for n in lengths])


def realistic_batch(n_words=30, bs=32, seed=0):
    rng = np.random.default_rng(seed + 100)
    return sentences(n_words, rng.integers(1, 30, bs), seed)


# ---------------------------------------------------------------------------------------------- MLM training


def draws(batch, cfg, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [mask_for_training(batch.x, batch.lengths, cfg, g) for _ in range(n)]


def test_a_batch_that_draws_no_token_predicts_one():
    """The original stops there (torch.multinomial of 0 samples): a batch whose draw picks nothing predicts
    one token, drawn at random among those that may be predicted (never padding nor a row's first)."""
    b = realistic_batch()
    t = torch.arange(b.x.shape[1])[None, :]
    allowed = (t < b.lengths[:, None]) & (t > 0)
    picked = set()
    for x, pred_mask, y in draws(b, MaskingConfig(word_pred=0.0, n_words=30), 30):
        assert int(pred_mask.sum()) == 1 and bool(allowed[pred_mask].all())
        assert torch.equal(y, b.x[pred_mask])
        picked.add(int(pred_mask.flatten().nonzero()))
    assert len(picked) > 10


def test_training_mask_rate_and_excluded_positions():
    """Original: each position with probability word_pred, then pad and row 0 (position 0) removed;
    the final </s> can be predicted. Targets are the clean tokens; other positions are untouched."""
    b = realistic_batch()
    cfg = MaskingConfig(word_pred=0.15, n_words=30)
    bs, slen = b.x.shape
    t = torch.arange(slen)[None, :]
    allowed = (t < b.lengths[:, None]) & (t > 0)
    last = t == (b.lengths[:, None] - 1)
    results = draws(b, cfg, 300)
    chosen = torch.stack([m for _, m, _ in results])
    assert not (chosen & ~allowed).any()
    for x, m, y in results:
        assert torch.equal(y, b.x[m]) and torch.equal(x[~m], b.x[~m])
    for where in (allowed, last):
        n = int(where.sum()) * len(results)
        rate = chosen[:, where].float().mean().item()
        assert abs(rate - 0.15) < 5 * math.sqrt(0.15 * 0.85 / n), (rate, n)


@pytest.mark.parametrize("pred_probs", [(0.8, 0.1, 0.1), (0.5, 0.2, 0.3), (1.0, 0.0, 0.0), (0.0, 0.0, 1.0)])
def test_training_mask_keep_random_split(pred_probs):
    """--word_mask_keep_rand: a predicted token becomes <special1>, stays, or becomes a word drawn
    uniformly from [0, n_words) (which may be the mask or the token itself)."""
    n_words = 30
    b = realistic_batch(n_words)
    results = draws(b, MaskingConfig(word_pred=0.15, pred_probs=pred_probs, n_words=n_words), 200)
    out = torch.cat([x[m] for x, m, _ in results])
    y = torch.cat([y for _, _, y in results])
    assert not (y == MASK_INDEX).any()
    pm, pk, pr = pred_probs
    observed = np.array([(out == MASK_INDEX).sum(), (out == y).sum(), ((out != MASK_INDEX) & (out != y)).sum()])
    expected = len(out) * np.array([pm + pr / n_words, pk + pr / n_words, pr * (n_words - 2) / n_words])
    assert (observed[expected == 0] == 0).all()
    keep = expected > 0
    if keep.sum() > 1:
        assert stats.chisquare(observed[keep], expected[keep]).pvalue > P_VALUE, (observed, expected)
    if pr == 1:  # every id of the vocabulary equally likely, specials included
        counts = np.bincount(out.numpy(), minlength=n_words)
        assert len(counts) == n_words and stats.chisquare(counts).pvalue > P_VALUE, counts


def alpha_config(counts, alpha=0.5, word_pred=0.15):
    """A vocabulary with these counts for the words N_RESERVED.. (specials count 0 as in a real one)."""
    words = [(w, 0) for w in SPECIAL_WORDS] + [(f"w{i}", c) for i, c in enumerate(counts)]
    params = SimpleNamespace(sample_alpha=alpha, word_pred=word_pred, word_mask=0.8, word_keep=0.1, word_rand=0.1)
    return MaskingConfig.from_params(params, Dictionary.from_words(words), len(words))


# words N_RESERVED + i; the last one has count 0: the original never predicts it
COUNTS = [400, 100, 25, 9, 4, 1, 0]


def original_weight(token, alpha=0.5):
    """The original's mask_scores: max(count, 1) ** -alpha, 0 for count 0 (the specials) and pad."""
    count = 0 if token < N_RESERVED else COUNTS[token - N_RESERVED]
    return 0.0 if count == 0 else max(count, 1) ** -alpha


def test_sample_alpha_one_position_follows_the_counts():
    """With ceil(word_pred*slen*bs) = 1 the chosen position has probability ∝ max(count, 1)^-alpha."""
    words = np.arange(N_RESERVED, N_RESERVED + len(COUNTS))
    b = batch_sentences([words, words[:4][::-1]])  # 2 x 9: one predicted position
    cfg = alpha_config(COUNTS, word_pred=0.05)
    results = draws(b, cfg, 1500)
    assert all(int(m.sum()) == 1 for _, m, _ in results)
    flat = torch.stack([m.flatten() for _, m, _ in results]).sum(0).numpy()
    w = np.array([original_weight(int(t)) for t in b.x.flatten()])
    w[[0, b.x.shape[1]]] = 0  # row 0 of the original = position 0 of each row here
    assert (flat[w == 0] == 0).all()
    assert stats.chisquare(flat[w > 0], len(results) * w[w > 0] / w.sum()).pvalue > P_VALUE


def test_sample_alpha_two_positions_without_replacement():
    """n = 2 positions drawn as numpy's choice(replace=False, p): the first ∝ w, the second ∝ w among
    the rest; P({i, j}) = w_i/W * w_j/(W - w_i) + w_j/W * w_i/(W - w_j)."""
    b = batch_sentences([np.arange(N_RESERVED + 1, N_RESERVED + len(COUNTS))])  # 1 x 8, ceil(0.25 * 8) = 2
    cfg = alpha_config(COUNTS, word_pred=0.25)
    results = draws(b, cfg, 2000)
    w = np.array([original_weight(int(t)) for t in b.x[0]])
    w[0] = 0
    W = w.sum()
    pairs = [(i, j) for i in range(len(w)) for j in range(i + 1, len(w)) if w[i] > 0 and w[j] > 0]
    expected = np.array([w[i] / W * w[j] / (W - w[i]) + w[j] / W * w[i] / (W - w[j]) for i, j in pairs])
    seen = Counter(tuple(m[0].nonzero().flatten().tolist()) for _, m, _ in results)
    assert set(seen) <= set(pairs)
    observed = np.array([seen[p] for p in pairs])
    assert stats.chisquare(observed, len(results) * expected).pvalue > P_VALUE


def test_sample_alpha_on_a_real_batch():
    """Exactly ceil(word_pred * slen * bs) positions, never a special token (</s> included), padding
    nor position 0."""
    rng = np.random.default_rng(3)
    b = batch_sentences([rng.integers(N_RESERVED, N_RESERVED + len(COUNTS), n) for n in rng.integers(1, 20, 16)])
    cfg = alpha_config(COUNTS, word_pred=0.15)
    n = math.ceil(0.15 * b.x.numel())
    never = torch.tensor([original_weight(int(t)) == 0 for t in b.x.flatten()]).view(b.x.shape)
    never[:, 0] = True
    for _, m, y in draws(b, cfg, 50):
        assert int(m.sum()) == n and not (m & never).any() and torch.equal(y, b.x[m])


def test_sample_alpha_on_a_stream_draws_the_first_words_and_leaves_them_out():
    """A stream's rows start with a word: the original draws its ceil(word_pred * slen * bs) positions among
    every token, then leaves the first of each row out, so it predicts fewer when those were drawn (xlm drew
    them all among the others). The counts' distribution against numpy's choice without replacement."""
    from types import SimpleNamespace as Batch
    x = torch.full((4, 8), N_RESERVED)  # the most frequent word (count 400) ...
    x[:, 0] = N_RESERVED + 5            # ... and a rare one (count 1) first in every row
    stream = Batch(x=x, lengths=torch.full((4,), 8))
    cfg = alpha_config(COUNTS, word_pred=0.15)
    n = math.ceil(0.15 * 32)
    got = Counter(int(m.sum()) for _, m, _ in draws(stream, cfg, 2000))
    w = np.array([original_weight(int(t)) for t in x.flatten()])
    rng = np.random.default_rng(0)
    expected = Counter(n - int(sum(i % 8 == 0 for i in rng.choice(32, n, replace=False, p=w / w.sum())))
                       for _ in range(20000))
    assert set(got) <= set(expected) and got[n] < 20  # n predicted only when no first word was drawn
    counts = sorted(expected)
    assert stats.chisquare([got[c] for c in counts], [2000 * expected[c] / 20000 for c in counts]).pvalue > P_VALUE


def test_target_order_does_not_change_the_loss():
    """xlm's targets are row-major over (bs, slen), the original's position-major over (slen, bs):
    the same (position, target) pairs, and the mean loss is the same."""
    torch.manual_seed(0)
    model = TransformerModel(TransformerConfig(n_words=30, emb_dim=16, n_layers=1, n_heads=2, n_langs=1)).eval()
    b = realistic_batch(bs=8)
    x, m, y = draws(b, MaskingConfig(word_pred=0.3, n_words=30), 1)[0]
    y_original = b.x.T[m.T]
    assert sorted(y.tolist()) == sorted(y_original.tolist()) and not torch.equal(y, y_original)
    with torch.no_grad():
        loss = model(x, b.lengths, pred_mask=m, y=y)
        h = model(x, b.lengths).transpose(0, 1)  # the original's (slen, bs, dim)
        original = F.cross_entropy(model.get_scores(h[m.T]), y_original)
    assert torch.allclose(loss, original, atol=1e-6)


# ---------------------------------------------------------------------------------------------- MLM evaluation


def original_eval_mask(x, lengths, word_pred, rng):
    """evaluator.py mask_out on an (slen, bs) array; returns (x, y, pred_mask, forced draws)."""
    slen, bs = x.shape
    to_predict = rng.rand(slen, bs) <= word_pred
    to_predict[0] = False
    forced = 0
    for i in range(bs):
        to_predict[lengths[i] - 1:, i] = False
        if not np.any(to_predict[:lengths[i] - 1, i]):
            to_predict[rng.randint(1, lengths[i] - 1), i] = True
            forced += 1
    out = x.copy()
    out[to_predict] = MASK_INDEX
    return out, x[to_predict], to_predict, forced


def test_eval_mask_is_the_originals_number_for_number():
    """Successive TLM batches sharing one RandomState(0), as one evaluation: the same masked tokens
    as the original's (slen, bs) draws, and the generator left in the same state."""
    ours, theirs = np.random.RandomState(0), np.random.RandomState(0)
    forced = 0
    rng = np.random.default_rng(0)
    for k in range(6):
        bs = int(rng.integers(1, 12))
        b1, b2 = (sentences(40, rng.integers(1, 9, bs), seed=10 * k + s) for s in (1, 2))
        x, lengths, _, _ = concat_pair(b1, 0, b2, 1)
        got_x, got_mask, got_y = mask_for_eval(x, lengths, 0.15, ours)
        exp_x, exp_y, exp_mask, n = original_eval_mask(x.T.numpy(), lengths.numpy(), 0.15, theirs)
        forced += n
        assert np.array_equal(got_mask.T.numpy(), exp_mask) and np.array_equal(got_x.T.numpy(), exp_x)
        assert torch.equal(got_y, x[got_mask]) and sorted(got_y.tolist()) == sorted(exp_y.tolist())
    assert forced > 0  # the "at least one per sentence" draws were exercised
    assert all(np.array_equal(a, b) for a, b in zip(ours.get_state(), theirs.get_state()))


def test_eval_mask_of_stacked_stream_windows():
    """The original evaluates a stream one window at a time (batch size 1); xlm stacks windows and
    must mask them as the original does window after window."""
    theirs = np.random.RandomState(0)
    bptt, forced = 8, 0
    g = torch.Generator().manual_seed(0)
    windows = [torch.randint(N_RESERVED, 40, (1, bptt), generator=g) for _ in range(12)]
    lengths = torch.full((1,), bptt)
    params = SimpleNamespace(word_pred=0.05, context_size=0)
    batches = list(_stack(eval_targets(((w, lengths, None, None) for w in windows), "mlm", params), 5))
    assert [len(b[0]) for b in batches] == [5, 5, 2]
    for k, (x, stacked_lengths, _, _, pred_mask, y) in enumerate(batches):
        originals = torch.cat(windows[5 * k:5 * k + 5])
        for i in range(len(x)):
            exp_x, exp_y, exp_mask, n = original_eval_mask(originals[i:i + 1].T.numpy(), lengths.numpy(), 0.05, theirs)
            forced += n
            assert np.array_equal(pred_mask[i:i + 1].T.numpy(), exp_mask)
            assert np.array_equal(x[i:i + 1].T.numpy(), exp_x)
        assert torch.equal(y, originals[pred_mask]) and (stacked_lengths == bptt).all()
    assert forced > 0


def test_clm_evaluation_predicts_every_next_token_whatever_the_context_size():
    """The original's evaluate_clm predicts every position (alen < lengths - 1): --context_size spares the
    first tokens of a training loss only."""
    x, lengths = torch.randint(N_RESERVED, 40, (2, 9)), torch.tensor([9, 6])
    params = SimpleNamespace(word_pred=0.15, context_size=5)
    _, _, _, _, pred_mask, y = next(eval_targets([(x, lengths, None, None)], "clm", params))
    assert pred_mask.sum(1).tolist() == [8, 5]
    assert np.array_equal(pred_mask.numpy(), original_clm(x.T.numpy(), lengths.numpy(), 0)[0].T)


# ---------------------------------------------------------------------------------------------- TLM layout


def original_concat(x1, len1, lang1, x2, len2, lang2, reset_positions):
    """utils.py concat_batches on (slen, bs) arrays."""
    lengths = len1 + len2 - (0 if reset_positions else 1)
    slen, bs = lengths.max(), len(lengths)
    x = np.full((slen, bs), PAD)
    x[:len1.max()] = x1
    positions = np.repeat(np.arange(slen)[:, None], bs, axis=1)
    langs = np.full((slen, bs), lang1)
    for i in range(bs):
        l1 = len1[i] if reset_positions else len1[i] - 1
        x[l1:l1 + len2[i], i] = x2[:len2[i], i]
        if reset_positions:
            positions[l1:, i] -= len1[i]
        langs[l1:, i] = lang2
    assert (x == EOS).sum() == (4 if reset_positions else 3) * bs
    return x, lengths, positions, langs


@pytest.mark.parametrize("reset_positions", [True, False])
def test_concat_pair_is_the_originals_layout(reset_positions):
    a = sentences(40, [3, 9, 1, 5, 12], seed=1)
    b = sentences(40, [7, 2, 10, 1, 4], seed=2)
    for (s1, l1), (s2, l2) in (((a, 3), (b, 8)), ((b, 8), (a, 3))):
        x, lengths, positions, langs = concat_pair(s1, l1, s2, l2, reset_positions=reset_positions)
        expected = original_concat(s1.x.T.numpy(), s1.lengths.numpy(), l1, s2.x.T.numpy(), s2.lengths.numpy(), l2,
                                   reset_positions)
        for got, want in zip((x.T, lengths, positions.T, langs.T), expected):
            assert np.array_equal(got.numpy(), want)


# ---------------------------------------------------------------------------------------------- CLM


def original_clm(x, lengths, context_size):
    """trainer.py clm_step on (slen, bs) arrays: (pred_mask, y)."""
    pred_mask = np.arange(lengths.max())[:, None] < lengths[None] - 1
    if context_size > 0:
        pred_mask[:context_size] = False
    return pred_mask, x[1:][pred_mask[:-1]]


def stream_batch():
    x = torch.randint(0, 40, (4, 16), generator=torch.Generator().manual_seed(0))
    return x, torch.full((4,), 16)


def pair_batch():
    x, lengths, _, _ = concat_pair(sentences(40, [3, 9, 1, 5], 1), 0, sentences(40, [7, 2, 6, 1], 2), 1)
    return x, lengths


@pytest.mark.parametrize("context_size", [0, 1, 5])
@pytest.mark.parametrize("make", [stream_batch, pair_batch])
def test_clm_targets_are_the_originals(make, context_size):
    """Position t predicts token t + 1 for t < length - 1 and t >= context_size; compared on the
    (position, target) grid since the two orders differ."""
    x, lengths = make()
    pred_mask, y = clm_targets(x, lengths, context_size)
    exp_mask, exp_y = original_clm(x.T.numpy(), lengths.numpy(), context_size)
    assert np.array_equal(pred_mask.T.numpy(), exp_mask)
    grid, exp_grid = torch.full(x.shape, -1), np.full(exp_mask.shape, -1)
    grid[pred_mask] = y
    exp_grid[exp_mask] = exp_y
    assert np.array_equal(grid.T.numpy(), exp_grid)


# ---------------------------------------------------------------------------------------------- fp16 / bf16


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory):
    """en and fr monolingual text and en-fr pairs of Zipf-distributed words from a 40-word vocabulary."""
    out = tmp_path_factory.mktemp("toy")
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(40)]
    p = 1 / np.arange(1, 41)
    p /= p.sum()
    (out / "vocab").write_text("".join(f"{w} {int(10000 * q) + 1}\n" for w, q in zip(words, p)))
    dico = Dictionary.read_vocab(out / "vocab")
    for split, n in (("train", 400), ("valid", 20), ("test", 20)):
        text = {lg: [" ".join(rng.choice(words, rng.integers(3, 12), p=p)) for _ in range(n)] for lg in ("en", "fr")}
        text["en-fr.en"] = text["en"][::-1]
        text["en-fr.fr"] = [" ".join(s.split()[::-1]) for s in text["en-fr.en"]]
        for name, lines in text.items():
            (out / f"{split}.{name}").write_text("\n".join(lines) + "\n")
            binarize(out / f"{split}.{name}", dico, out / f"{split}.{name}.pth", threads=1)
    return out


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_mixed_precision_training(toy_data, tmp_path, precision):
    """Autocast steps on the CPU: finite losses that fall over 30 iterations; with fp16 the
    GradScaler's state is in checkpoint.pth (read with weights_only loading)."""
    python("train.py", "--exp_name", "amp", "--exp_id", precision, "--dump_path", tmp_path, "--data_path", toy_data,
           "--lgs", "en-fr", "--clm_steps", "en", "--mlm_steps", "en,en-fr", "--emb_dim", "16", "--n_layers", "1",
           "--n_heads", "2", "--batch_size", "16", "--bptt", "16", "--max_len", "20", "--optimizer", "adam,lr=0.003",
           "--epoch_size", "1440", "--max_epoch", "1", "--log_interval", "1", f"--{precision}", "true")
    dump = tmp_path / "amp" / precision
    lines = losses_of((dump / "train.log").read_text())
    assert sorted(lines) == list(range(1, 31))  # 3 steps of 16 sentences each
    losses = {i: dict((k, float(v)) for k, v in re.findall(r"([\w-]+): +(\S+)", line)) for i, line in lines.items()}
    assert set(losses[1]) == {"CLM-en", "MLM-en", "MLM-en-fr"}
    assert all(math.isfinite(v) for step in losses.values() for v in step.values())
    for name in losses[1]:
        first = np.mean([losses[i][name] for i in range(1, 4)])
        last = np.mean([losses[i][name] for i in range(21, 31)])
        assert last < first - 0.3, (name, first, last)
    state = read_checkpoint(dump / "checkpoint.pth")["train_state"]
    if precision == "fp16":
        assert state["scaler"]["scale"] > 0 and "_growth_tracker" in state["scaler"]
    else:
        assert state["scaler"] == {}  # bf16 needs no loss scaling
    scores = scores_of((dump / "train.log").read_text())[-1]  # evaluation: windows and pairs
    names = [f"{split}_{name}_ppl" for split in ("valid", "test") for name in ("en_clm", "en_mlm", "en_fr_mlm")]
    assert all(math.isfinite(scores[name]) for name in names)


def test_cpu_autocast_computes_in_half_precision():
    """The autocast train.py enters does run the model's matrix products in the lower precision."""
    model = TransformerModel(TransformerConfig(n_words=30, emb_dim=16, n_layers=1, n_heads=2, n_langs=1))
    b = realistic_batch(bs=2)
    for dtype in (torch.float16, torch.bfloat16):
        with torch.autocast("cpu", dtype=dtype):
            assert model.get_scores(model(b.x, b.lengths)).dtype == dtype


def test_a_stream_shorter_than_its_evaluation_subsample_scores_as_the_originals(tmp_path):
    """Runs of more than 5 languages evaluate the first 1/5 (valid) or 1/10 (test) of a stream's bptt
    windows: none of a shorter stream, whose perplexity the original reports as 1e9 and accuracy 0."""
    from types import SimpleNamespace

    from xlm.data.binarized import binarize
    from xlm.data.dictionary import SPECIAL_WORDS, Dictionary
    from xlm.evaluation.lm import evaluate_lm, stream_means
    from xlm.model.transformer import TransformerConfig, TransformerModel
    from xlm.train.distributed import DistInfo
    dico = Dictionary.from_words([(w, 0) for w in SPECIAL_WORDS] + [(f"w{i}", 20 - i) for i in range(20)])
    path = tmp_path / "valid.en"
    path.write_text("w1 w2 w3 w4 w5 w6\nw7 w8 w9\n")  # 11 tokens with the </s>: 2 windows of 8
    corpus = binarize(path, dico, tmp_path / "valid.en.pth", threads=1)
    data = SimpleNamespace(mono={"en": {"valid": corpus, "test": corpus}}, n_words=len(dico))
    model = TransformerModel(TransformerConfig(n_words=len(dico), emb_dim=16, n_layers=1, n_heads=2, n_langs=6))
    langs = ["de", "en", "es", "fr", "it", "nl"]
    params = SimpleNamespace(langs=langs, lang2id={lg: i for i, lg in enumerate(langs)}, n_langs=6, bptt=8,
                             batch_size=4, clm_steps=[], mlm_steps=[("en", None)], word_pred=0.15, encoder_only=True)
    logged = []
    scores = evaluate_lm({"mlm": model}, data, params, DistInfo(), log=logged.append)
    assert scores["valid_en_mlm_ppl"] == 1e9 and scores["valid_en_mlm_acc"] == 0.0
    assert stream_means(scores, params, "valid")["valid_mlm_ppl"] == 1e9 and "no token to predict" in logged[0]
    params.langs = langs[:5]  # 5 languages or fewer: every window
    scores = evaluate_lm({"mlm": model}, data, params, DistInfo())
    assert 1 < scores["valid_en_mlm_ppl"] < 1e9
