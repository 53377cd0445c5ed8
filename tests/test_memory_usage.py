"""The product-key memories' usage statistics of the valid sets, with the original's names and formulas:
recorded values of the original's `eval_memory_usage`, the names of a run, and the reads of a padded batch
counted as those of its real tokens, whether the model leaves the padding out (CPU) or computes it (GPU)."""
import logging

import numpy as np
import pytest
import torch

import xlm.model.transformer as transformer
from test_train import TINY, scores_of, train
from xlm.data.loader import load_training_data
from xlm.evaluation.memory import MemoryUsage, usage_statistics
from xlm.model.checkpoint import read_checkpoint
from xlm.objectives.lm import lm_scores
from xlm.train.build import build_models
from xlm.train.options import parse_params

MEMORY = ["--use_memory", "true", "--mem_n_keys", "16", "--mem_k_dim", "16", "--mem_heads", "2", "--mem_knn", "4"]


def test_statistics_equal_the_originals():
    """The original's eval_memory_usage on these reads (200 slots; its float32 sums) printed these values."""
    rng = np.random.default_rng(0)
    indices = (rng.zipf(1.5, size=(3, 8, 2, 4)) - 1) % 200
    weights = rng.random((3, 8, 2, 4)).astype(np.float32)
    weights /= weights.sum(-1, keepdims=True)
    w, u = np.zeros(200), np.zeros(200)
    np.add.at(w, indices, weights)
    np.add.at(u, indices, 1)
    expected = {"used": 27.0, "kl_w": 2.464022, "kl_u": 2.423946, "gini_w": 0.912734, "gini_u": 0.89901,
                "top50_w": 3.0, "top90_w": 28.0, "top99_w": 48.0, "top50_u": 3.0, "top90_u": 35.0, "top99_u": 53.0}
    got = usage_statistics("s", w / w.sum(), u / u.sum())
    assert list(got) == [f"s_mem_{k}" for k in expected]  # the original's order in the scores
    for k, v in expected.items():
        assert got[f"s_mem_{k}"] == pytest.approx(v, abs=2e-6), k


def test_a_run_reports_them_for_the_valid_sets(small_sample, tmp_path):
    """Encoder-only MLM + TLM with a memory in the last layer: each valid set gets the statistics after its
    ppl and acc, test sets none, and a statistic can be a validation metric (as in the original)."""
    metric = "valid_en_self.model.memories.1_in_mem_used"
    proc = train(small_sample, tmp_path, "mem", "--lgs", "en-fr", "--mlm_steps", "en,en-fr", *MEMORY,
                 "--mem_enc_positions", "1", "--epoch_size", "64", "--max_epoch", "1", "--validation_metrics", metric)
    assert proc.returncode == 0
    scores = scores_of((tmp_path / "test" / "mem" / "train.log").read_text())[0]
    names = list(scores)
    for prefix, ppl in (("valid_en", "valid_en_mlm_ppl"), ("valid_en_fr", "valid_en_fr_mlm_ppl")):
        stats = [n for n in names if n.startswith(f"{prefix}_self.model.memories.1_in_mem_")]
        assert len(stats) == 11 and names.index(stats[0]) == names.index(ppl) + 2
    assert not [n for n in names if n.startswith("test") and "_mem_" in n]
    assert 0 < scores[metric] <= 100
    assert (tmp_path / "test" / "mem" / f"best-{metric}.pth").is_file()


def test_a_flat_memory_trains_and_reloads(small_sample, tmp_path):
    """--mem_implementation flat with binary keys (2^5 keys of 5 dimensions) after layer 0: a run, its valid
    statistics over the 32 slots, and its best model evaluated again with --eval_only, the same scores; the
    checkpoint says what the original derives (32 indices, no product keys)."""
    metric = "valid_en_mlm_ppl"
    flat = ["--use_memory", "true", "--mem_implementation", "flat", "--mem_keys_type", "binary", "--mem_k_dim", "5",
            "--mem_n_keys", "32", "--mem_heads", "2", "--mem_knn", "4", "--mem_use_different_keys", "false",
            "--mem_enc_positions", "0+", "--lgs", "en-fr", "--mlm_steps", "en"]
    train(small_sample, tmp_path, "flat", *flat, "--epoch_size", "64", "--max_epoch", "1", "--validation_metrics",
          f"_{metric}")
    scores = scores_of((tmp_path / "test" / "flat" / "train.log").read_text())[0]
    assert 0 < scores["valid_en_self.model.memories.0_after_mem_used"] <= 100
    best = tmp_path / "test" / "flat" / f"best-{metric}.pth"
    params = read_checkpoint(best)["params"]
    assert (params["n_indices"], params["mem_size"], params["mem_product_quantization"]) == (32, 32, False)
    train(small_sample, tmp_path, "again", *flat, "--eval_only", "true", "--reload_model", str(best))
    again = scores_of((tmp_path / "test" / "again" / "train.log").read_text())[0]
    assert again[metric] == pytest.approx(scores[metric], rel=1e-6)


@pytest.mark.parametrize("packs", [True, False], ids=["padding left out (CPU)", "padding computed (GPU)"])
def test_a_padded_batch_counts_its_real_tokens(small_sample, tmp_path, monkeypatch, packs):
    """A padded batch reads the slots that its sentences read one at a time, unpadded; and scoring every
    position (what the statistics need of a memory in the last layer) gives the scores of the predicted
    positions alone."""
    monkeypatch.setattr(transformer, "reads_on_host", lambda device: packs)
    params = parse_params(["--exp_name", "t", "--dump_path", str(tmp_path), "--data_path", str(small_sample), *TINY,
                           "--lgs", "en", "--mlm_steps", "en", *MEMORY, "--mem_enc_positions", "0,1+"])
    data = load_training_data(params)
    params.n_words = data.n_words
    torch.manual_seed(0)
    model = build_models(params, data.dico, torch.device("cpu"), logging.getLogger("test"))["model"].eval()
    lengths = torch.tensor([7, 3, 5])
    x = torch.randint(14, data.n_words, (3, 7))
    x[torch.arange(7)[None, :] >= lengths[:, None]] = data.dico.pad_index
    padded, alone = (MemoryUsage({"model": model}, torch.device("cpu")),
                     MemoryUsage({"model": model}, torch.device("cpu")))
    with torch.no_grad():
        with padded.reading(x, lengths):
            model(x, lengths)
        for row, n in zip(x, lengths):
            with alone.reading(row[None, :n]):
                model(row[None, :n], None)
        pred_mask = torch.zeros_like(x, dtype=torch.bool)
        pred_mask[:, 1] = pred_mask[0, 5] = True
        y = x[pred_mask]
        every = lm_scores(model, x, lengths, None, None, pred_mask, y, causal=False, every_position=True)
        some = lm_scores(model, x, lengths, None, None, pred_mask, y, causal=False)
    for name in ("self.model.memories.0_in", "self.model.memories.1_after"):
        assert padded.counted[name].sum() == 15 * 2 * 4  # real tokens x heads x knn
        torch.testing.assert_close(padded.counted[name], alone.counted[name])
        torch.testing.assert_close(padded.weighted[name], alone.weighted[name])
    assert every[1:] == some[1:] and every[0] == pytest.approx(some[0], rel=1e-6)
