"""Evaluation shared among ranks: each rank evaluates its share of the valid/test sets and of the BLEU
sentences, and every rank gets the scores of one process evaluating everything."""
import logging
import os
import socket
import subprocess
import sys
from collections import Counter
from contextlib import nullcontext

import numpy as np
import pytest
import torch

import xlm.evaluation.classification as classification
import xlm.evaluation.lm as lm
import xlm.evaluation.mt as mt
import xlm.model.linear as linear_module
from conftest import ROOT
from test_train import TINY, scores_of
from xlm.data.binarized import load_binarized
from xlm.data.datasets import BatchingOptions, SentenceDataset
from xlm.data.loader import load_training_data
from xlm.train.distributed import DistInfo, own_share
from xlm.train.build import build_models
from xlm.train.options import parse_params

STEPS = ["--lgs", "en-fr", "--encoder_only", "false", "--clm_steps", "en,en-fr", "--mlm_steps", "en,fr,en-fr",
         "--mt_steps", "en-fr", "--eval_bleu", "true", "--eval_only", "true", "--use_memory", "true",
         "--mem_enc_positions", "1", "--mem_dec_positions", "0+", "--mem_n_keys", "16", "--mem_k_dim", "16",
         "--mem_heads", "2", "--mem_knn", "4"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_same_scores(got, expected):
    assert got.keys() == expected.keys()
    for k, v in expected.items():
        assert got[k] == pytest.approx(v, rel=1e-6, abs=1e-9), k


def test_torchrun_two_ranks_evaluate_as_one_process(small_sample, tmp_path):
    """MLM, TLM, CLM (stream and pair) and MT with BLEU, and the memories' statistics, of a checkpoint
    (--eval_only): 2 ranks (gloo) log the scores of one process, on both ranks, and rank 0 writes the same
    hypothesis files."""
    flags = ["--exp_name", "test", "--dump_path", tmp_path, "--data_path", small_sample, *TINY, *STEPS]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    subprocess.run([sys.executable, "train.py", *map(str, flags), "--exp_id", "single"], cwd=ROOT, env=env,
                   check=True, capture_output=True)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                           str(free_port()), "train.py", *map(str, flags), "--exp_id", "ddp"], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    single, ddp = tmp_path / "test" / "single", tmp_path / "test" / "ddp"
    expected = scores_of((single / "train.log").read_text())[0]
    assert {"valid_en_mlm_ppl", "valid_en_fr_mlm_acc", "test_en-fr_clm_ppl", "valid_en-fr_mt_bleu",
            "valid_en-fr_self.decoder.memories.0_after_mem_kl_w", "valid_en_fr_self.encoder.memories.1_in_mem_used",
            "valid_en-fr_self.encoder.memories.1_in_mem_top90_u"} <= set(expected)
    assert_same_scores(scores_of((ddp / "train.log").read_text())[0], expected)
    # rank 1 logs the same "name -> value" lines
    logged = [line.split(" - ")[-1] for line in (ddp / "train.log-1").read_text().splitlines() if " -> " in line]
    assert len(logged) == len(expected) and all(float(line.split(" -> ")[1]) == pytest.approx(expected[line.split(
        " -> ")[0]], rel=1e-6, abs=1e-6) for line in logged)
    names = sorted(os.listdir(single / "hypotheses"))
    assert len(names) == 6 and sorted(os.listdir(ddp / "hypotheses")) == names  # 4 references, 2 hypotheses
    for name in names:
        assert (ddp / "hypotheses" / name).read_text() == (single / "hypotheses" / name).read_text(), name


class TwoRanks:
    """Collectives of 2 ranks run one after the other in this process: rank 1 first records what it
    sends, then rank 0 receives it."""

    def __init__(self):
        self.sums, self.shares = [], []

    def patch(self, monkeypatch, rank):
        def all_reduce_sum(values, info):
            if rank == 1:
                self.sums.append(list(values))
                return values
            return [a + b for a, b in zip(values, self.sums.pop(0))]

        def gather_to_master(obj, info):
            if rank == 1:
                self.shares.append(obj)
                return None
            return [obj, self.shares.pop(0)]

        for module in (lm, mt, classification):
            for name, function in (("all_reduce_sum", all_reduce_sum), ("gather_to_master", gather_to_master)):
                if hasattr(module, name):
                    monkeypatch.setattr(module, name, function)
        monkeypatch.setattr(mt, "broadcast_from_master", lambda obj, info: obj)


def rows_seen(modules):
    """A Counter of (module, input row) over the forward calls of modules, filled as they run."""
    seen = Counter()
    for name, module in modules.items():
        module.register_forward_hook(lambda m, args, out, name=name: seen.update(
            (name, tuple(row)) for row in args[0].tolist()))
    return seen


def translation_eval(small_sample, tmp_path, *flags):
    params = parse_params(["--exp_name", "t", "--dump_path", str(tmp_path), "--data_path", str(small_sample), *TINY,
                           "--lgs", "en-fr", "--encoder_only", "false", "--clm_steps", "en", "--mlm_steps", "en,en-fr",
                           "--mt_steps", "en-fr", "--eval_bleu", "true", "--eval_only", "true", *flags])
    data = load_training_data(params)
    params.n_words = data.n_words
    return params, data


def test_bleu_has_multi_bleu_two_decimals(small_sample, tmp_path, monkeypatch):
    """The original reads the BLEU that multi-bleu.perl prints (%.2f): its best checkpoints and stopping
    criterion never see a smaller gain."""
    params, data = translation_eval(small_sample, tmp_path)
    models = build_models(params, data.dico, torch.device("cpu"), logging.getLogger("test"))
    monkeypatch.setattr(mt, "tokenized_bleu", lambda hyps, refs: 12.345678)
    scores = mt.evaluate_mt(models["encoder"], models["decoder"], data, params, dump=tmp_path)
    assert scores["valid_en-fr_mt_bleu"] == scores["test_en-fr_mt_bleu"] == 12.35


def test_each_rank_evaluates_a_disjoint_share(small_sample, tmp_path, monkeypatch):
    """The forward calls of rank 0 and rank 1 (rows of every batch, BLEU generation included) add up
    to one process's, are split about evenly, and give one process's scores."""
    params, data = translation_eval(small_sample, tmp_path)

    def evaluate(info, dump):
        torch.manual_seed(0)
        models = build_models(params, data.dico, torch.device("cpu"), logging.getLogger("test"))
        seen = rows_seen(models)
        scores = lm.evaluate_lm({"clm": models["decoder"], "mlm": models["encoder"]}, data, params, info)
        scores.update(mt.evaluate_mt(models["encoder"], models["decoder"], data, params, info, dump=dump))
        return scores, seen

    expected, single = evaluate(DistInfo(), tmp_path / "single")
    ranks = TwoRanks()
    shares = []
    for rank in (1, 0):
        ranks.patch(monkeypatch, rank)
        scores, seen = evaluate(DistInfo(rank=rank, world_size=2), tmp_path / "shared")
        shares.append(seen)
    assert_same_scores(scores, expected)
    rank1, rank0 = shares
    assert rank0 + rank1 == single  # nothing is run twice, nothing is left out
    for name in ("encoder", "decoder"):
        n0, n1 = (sum(n for (m, _), n in share.items() if m == name) for share in (rank0, rank1))
        assert 0.3 < n0 / (n0 + n1) < 0.7, (name, n0, n1)
    for name in os.listdir(tmp_path / "single" / "hypotheses"):
        assert (tmp_path / "shared" / "hypotheses" / name).read_text() == \
            (tmp_path / "single" / "hypotheses" / name).read_text()


@pytest.mark.parametrize("every", [1, 3])
def test_a_checked_share_is_checked_as_often_on_every_rank(every):
    """own_share with a check: the same items as without, and the check called before every `every`
    rounds on every rank, ranks with a shorter share included (a collective there must not hang)."""
    for world_size in (1, 2, 3):
        for n in range(8):
            calls = []
            for rank in range(world_size):
                info = DistInfo(rank=rank, world_size=world_size)
                seen = []
                for item in own_share(range(n), info, check=lambda: seen.append("check"), every=every):
                    seen.append(item)
                assert [i for i in seen if i != "check"] == list(own_share(range(n), info)) == \
                    list(range(rank, n, world_size))
                # a check before each chunk of every * world_size items, ahead of the rank's items in it
                chunk = every * world_size
                assert seen == [x for c in range(0, n, chunk) for x in
                                ["check", *range(c + rank, min(c + chunk, n), world_size)]]
                calls.append(seen.count("check"))
            assert calls == [-(-n // (every * world_size))] * world_size, (world_size, n)


def test_evaluation_checks_before_each_batch_on_every_rank(small_sample, tmp_path, monkeypatch):
    """evaluate_lm and evaluate_mt call `check` (a signal's collective in training) as many times on both
    ranks, before each batch a rank scores or translates: a stream's windows a stack at a time."""
    params, data = translation_eval(small_sample, tmp_path)
    batches, calls = [], []
    score_batches, bleu_hypotheses = lm.score_batches, mt.bleu_hypotheses

    def counted(batches_seen):
        for batch in batches_seen:
            batches.append(1)
            yield batch
    monkeypatch.setattr(lm, "score_batches", lambda model, own, *a, **k: score_batches(model, counted(own), *a, **k))
    monkeypatch.setattr(mt, "bleu_hypotheses", lambda *a: batches.append(1) or bleu_hypotheses(*a))
    ranks = TwoRanks()
    for rank in (1, 0):
        ranks.patch(monkeypatch, rank)
        batches.clear()
        torch.manual_seed(0)
        models = build_models(params, data.dico, torch.device("cpu"), logging.getLogger("test"))
        checks = []
        info = DistInfo(rank=rank, world_size=2)
        lm.evaluate_lm({"clm": models["decoder"], "mlm": models["encoder"]}, data, params, info,
                       check=lambda: checks.append(1))
        mt.evaluate_mt(models["encoder"], models["decoder"], data, params, info, dump=tmp_path,
                       check=lambda: checks.append(1))
        calls.append((len(checks), len(batches)))
    (checks1, batches1), (checks0, batches0) = calls
    # rank 0 has a batch in every round, rank 1 one fewer in each of the 8 sets of an odd number
    assert checks0 == checks1 == batches0 and batches0 - 8 <= batches1 < batches0, calls


def test_classifier_predictions_are_shared(small_sample, monkeypatch):
    """predict: each rank runs every other batch; rank 0 gets every sentence's outputs in order."""
    corpus = load_binarized(str(small_sample / "valid.en.pth"))
    split = classification.LabelledSplit(SentenceDataset(corpus, BatchingOptions(batch_size=8, group_by_size=True)),
                                         None)
    rows = []

    def model(x, lengths, langs):  # (first word, length) of each sentence
        rows.append(len(x))
        return torch.stack([x[:, 1].float(), lengths.float()], 1)

    expected = np.array([[corpus[i][0] if len(corpus[i]) else 1, len(corpus[i]) + 2] for i in range(len(corpus))],
                        dtype=np.float32)
    np.testing.assert_array_equal(classification.predict(model, split, None, DistInfo(), nullcontext()), expected)
    ranks = TwoRanks()
    counts = []
    for rank in (1, 0):
        ranks.patch(monkeypatch, rank)
        rows.clear()
        out = classification.predict(model, split, None, DistInfo(rank=rank, world_size=2), nullcontext())
        counts.append(sum(rows))
    assert counts[0] + counts[1] == len(corpus) and abs(counts[0] - counts[1]) <= 8
    np.testing.assert_array_equal(out, expected)


def test_scores_through_onednn_translations_with_mkls_roundings(onednn, small_sample, tmp_path, monkeypatch):
    """At 128 dimensions evaluation goes through oneDNN on the CPU: it scores in oneDNN's order, and
    translates for BLEU, encoder included, with MKL's roundings, the original's (xlm/model/linear.py):
    the perplexities are those of an evaluation without oneDNN within float tolerance, the encoder
    outputs that decoding starts from are the same bit for bit, and so are the hypotheses."""
    params, data = translation_eval(small_sample, tmp_path, "--emb_dim", "128")
    onednn_calls, encoded = [], {}
    onednn, greedy = linear_module._onednn_linear, mt.generate_greedy
    monkeypatch.setattr(linear_module, "_onednn_linear", lambda *a: onednn_calls.append(1) or onednn(*a))

    def evaluate(name):
        torch.manual_seed(0)
        models = build_models(params, data.dico, torch.device("cpu"), logging.getLogger("test"))
        monkeypatch.setattr(mt, "generate_greedy",
                            lambda decoder, enc, *a, **k: encoded.setdefault(name, []).append(enc) or
                            greedy(decoder, enc, *a, **k))
        scores = lm.evaluate_lm({"clm": models["decoder"], "mlm": models["encoder"]}, data, params)
        scores.update(mt.evaluate_mt(models["encoder"], models["decoder"], data, params, dump=tmp_path / name))
        return scores

    fast = evaluate("onednn")
    assert onednn_calls
    monkeypatch.setattr(linear_module, "onednn_chosen", lambda: False)
    assert_same_scores(fast, evaluate("mkl"))
    assert len(encoded["onednn"]) == len(encoded["mkl"]) > 0
    assert all(torch.equal(a, b) for a, b in zip(encoded["onednn"], encoded["mkl"]))
    for name in os.listdir(tmp_path / "mkl" / "hypotheses"):
        assert (tmp_path / "onednn" / "hypotheses" / name).read_text() == \
            (tmp_path / "mkl" / "hypotheses" / name).read_text()


def test_bleu_evaluation_shows_its_progress(small_sample, tmp_path, monkeypatch, capsys):
    """Decoding a large test set takes minutes: rank 0 writes how far its share is (on stderr, a line
    every PROGRESS_EVERY seconds where it is no terminal); another rank writes nothing."""
    import xlm.progress
    monkeypatch.setattr(xlm.progress, "PROGRESS_EVERY", 0.0)
    params, data = translation_eval(small_sample, tmp_path)
    models = build_models(params, data.dico, torch.device("cpu"), logging.getLogger("test"))
    mt.evaluate_mt(models["encoder"], models["decoder"], data, params, dump=tmp_path)
    lines = capsys.readouterr().err.splitlines()
    n_batches = len(mt._direction(data, params, "valid", "en", "fr")[0].batches(None))
    assert f"valid_en-fr_mt BLEU: {n_batches}/{n_batches} batches" in "\n".join(lines)
    assert any(line.startswith("test_en-fr_mt BLEU: 1/") for line in lines)
    ranks = TwoRanks()
    ranks.patch(monkeypatch, 1)
    mt.evaluate_mt(models["encoder"], models["decoder"], data, params, DistInfo(rank=1, world_size=2), dump=tmp_path)
    assert "BLEU:" not in capsys.readouterr().err


def test_a_diverged_models_perplexity_is_inf():
    """A mean cross-entropy beyond 709.78 overflowed math.exp: the run stopped with a traceback at its
    evaluation (seen with --optimizer adam,beta2=0); the original's np.exp logs inf."""
    from xlm.evaluation.lm import perplexity
    assert perplexity(6.0, 3) == pytest.approx(np.exp(2.0))
    assert perplexity(1000.0, 1) == float("inf") and np.isnan(perplexity(float("nan"), 1))


@torch.no_grad()
def test_scores_round_as_the_original_where_that_costs_little(small_sample, tmp_path, monkeypatch):
    """Where MKL's kernels are chosen (`onednn_chosen`), evaluation scores in the original's roundings
    (`scoring_roundings`): a batch's teacher-forced cross-entropy and correct predictions are those of the
    padded computation outside free_roundings (the original's arithmetic, as CUDA's path computes it) to
    the last bit, so that accuracies are the original's, not only close (free roundings turned a near tie
    of the two best scores the other way in 1 of 45,909 predictions). Where oneDNN is chosen, and off the
    CPU, the scores are free; evaluate_lm follows the same rule."""
    import xlm.model.transformer as transformer
    from xlm.objectives.lm import clm_targets
    monkeypatch.setattr(linear_module, "onednn_chosen", lambda: False)
    params, data = translation_eval(small_sample, tmp_path, "--eval_bleu", "false")
    torch.manual_seed(3)
    models = build_models(params, data.dico, torch.device("cpu"), logging.getLogger("test"))
    enc, dec = models["encoder"].eval(), models["decoder"].eval()
    dataset, _ = mt._direction(data, params, "valid", "en", "fr")
    s, t = dataset.collate(dataset.batches(None)[-1])  # the longest sentences, some padded
    assert not bool((s.lengths == s.lengths.max()).all() and (t.lengths == t.lengths.max()).all())
    xe, n, correct, _ = mt.score_pairs(enc, dec, s, t, "en", "fr", params, None, torch.device("cpu"), nullcontext())
    with monkeypatch.context() as m:
        m.setattr(transformer, "reads_on_host", lambda device: False)
        src = enc(s.x, s.lengths, langs=params.lang2id["en"])
        pred_mask, y = clm_targets(t.x, t.lengths)
        h = dec(t.x, t.lengths, langs=params.lang2id["fr"], causal=True, src_enc=src, src_len=s.lengths)
        logits = dec.get_scores(h[pred_mask]).float()
    assert (xe, n, correct) == (torch.nn.functional.cross_entropy(logits, y, reduction="sum").item(), len(y),
                                (logits.argmax(-1) == y).sum().item())

    free = []
    lm_scores = lm.lm_scores
    monkeypatch.setattr(lm, "lm_scores", lambda *a, **k: free.append(linear_module.in_free_roundings()) or
                        lm_scores(*a, **k))
    lm.evaluate_lm({"clm": dec, "mlm": enc}, data, params, splits=("valid",))
    monkeypatch.setattr(linear_module, "onednn_chosen", lambda: True)
    lm.evaluate_lm({"clm": dec, "mlm": enc}, data, params, splits=("valid",))
    assert set(free[:len(free) // 2]) == {False} and set(free[len(free) // 2:]) == {True}
    monkeypatch.setattr(linear_module, "onednn_chosen", lambda: False)
    for device in (torch.device("meta"), "meta", "cpu"):  # tools pass a device's name
        with linear_module.scoring_roundings(device):
            assert linear_module.in_free_roundings() == (device != "cpu")
