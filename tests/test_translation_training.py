"""train.py with --encoder_only false: denoising auto-encoding, back-translation and supervised MT."""
import json
import re

import torch

import xlm
from conftest import python
from xlm.data.bpe import remove_bpe
from xlm.data.datasets import batch_sentences
from xlm.data.dictionary import MASK_INDEX
from xlm.model.checkpoint import read_checkpoint
from xlm.objectives.mt import add_noise

TINY = ["--emb_dim", "32", "--n_layers", "1", "--n_heads", "4", "--batch_size", "16", "--max_len", "30"]


def train(data, dump, exp_id, *flags):
    return python("train.py", "--exp_name", "mt", "--exp_id", exp_id, "--dump_path", dump, "--data_path", data,
                  *TINY, *flags)


def scores_of(log):
    return [json.loads(line.split("__log__:", 1)[1]) for line in log.splitlines() if "__log__:" in line]


def test_noise_follows_the_original_rules():
    g = torch.Generator().manual_seed(0)
    sentence = torch.arange(20, 40).numpy()
    batch = batch_sentences([sentence, sentence[:3]])
    shuffled = add_noise(batch, 3, 0, 0, g)
    order = shuffled.x[0, 1:21] - 20
    assert sorted(order.tolist()) == list(range(20)) and (order - torch.arange(20)).abs().max() < 3
    assert shuffled.x[0, 0] == 1 and shuffled.x[0, 21] == 1
    dropped = add_noise(batch, 0, 0.5, 0, g)
    assert (dropped.lengths < batch.lengths).any() and (dropped.lengths >= 3).all()
    blanked = add_noise(batch, 0, 0, 0.5, g)
    assert torch.equal(blanked.lengths, batch.lengths) and (blanked.x == MASK_INDEX).any()
    assert (blanked.x[:, 0] == 1).all() and blanked.x[0, 21] == 1


def test_unsupervised_and_supervised_mt(small_sample, tmp_path):
    # an MLM-pretrained model initialises both encoder and decoder (--reload_model enc,dec), as in the paper
    train(small_sample, tmp_path, "mlm", "--lgs", "en-fr", "--mlm_steps", "en,fr", "--epoch_size", "160",
          "--max_epoch", "1")
    mlm = tmp_path / "mt" / "mlm" / "checkpoint.pth"
    train(small_sample, tmp_path, "aebt", "--lgs", "en-fr", "--encoder_only", "false",
                 "--reload_model", f"{mlm},{mlm}", "--ae_steps", "en,fr", "--bt_steps", "en-fr-en,fr-en-fr",
                 "--word_shuffle", "3", "--word_dropout", "0.1", "--word_blank", "0.1",
                 "--lambda_ae", "0:1,100:0.1", "--tokens_per_batch", "400", "--epoch_size", "96", "--max_epoch", "2",
                 "--log_interval", "1",
                 "--eval_bleu", "true", "--validation_metrics", "valid_en-fr_mt_bleu",
                 "--stopping_criterion", "valid_en-fr_mt_bleu,10")
    dump = tmp_path / "mt" / "aebt"
    log = (dump / "train.log").read_text()
    assert "decoder-only parameters (cross-attention) keep their initialisation" in log
    assert "AE-en:" in log and "BT-en-fr-en:" in log and "BT-fr-en-fr:" in log
    # as the original logs them (TINY's --max_len 30)
    assert re.search(r"AE training sentences of en: removed \d+ of \d+, empty or longer than --max_len 30", log)
    assert re.search(r"BT training sentences of fr: removed \d+ of \d+, empty or longer than --max_len 30", log)
    scores = scores_of(log)
    assert {"valid_en-fr_mt_ppl", "valid_en-fr_mt_acc", "valid_en-fr_mt_bleu", "valid_fr-en_mt_bleu",
            "test_fr-en_mt_bleu"} <= set(scores[0])
    hyps = {p.name for p in (dump / "hypotheses").iterdir()}
    assert {"ref.en-fr.valid.txt", "ref.fr-en.test.txt", "hyp0.en-fr.valid.txt", "hyp1.fr-en.test.txt"} <= hyps
    refs = (dump / "hypotheses" / "ref.en-fr.valid.txt").read_text().splitlines()
    assert len(refs) == 150 and "@@" not in " ".join(refs)
    # in the original's order, that of its evaluation batches: stable-sorted by the pair's length
    en, fr = ((small_sample / f"valid.en-fr.{lang}").read_text().splitlines() for lang in ("en", "fr"))
    order = sorted(range(len(fr)), key=lambda i: len(en[i].split()) + len(fr[i].split()))
    assert refs == [remove_bpe(fr[i].replace("<unk>", "<<unk>>")) for i in order] and order != sorted(order)
    assert len((dump / "hypotheses" / "hyp0.en-fr.valid.txt").read_text().splitlines()) == 150
    assert (dump / "best-valid_en-fr_mt_bleu.pth").exists()

    # supervised MT: the teacher-forced perplexity falls, and translate.py uses the checkpoint
    train(small_sample, tmp_path, "sup", "--lgs", "en-fr", "--encoder_only", "false", "--mt_steps", "en-fr,fr-en",
          "--optimizer", "adam,lr=0.002", "--epoch_size", "480", "--max_epoch", "3")
    scores = scores_of((tmp_path / "mt" / "sup" / "train.log").read_text())
    assert scores[-1]["valid_en-fr_mt_ppl"] < 0.7 * scores[0]["valid_en-fr_mt_ppl"]
    model = xlm.load_model(tmp_path / "mt" / "sup" / "checkpoint.pth")
    assert model.decoder is not None
    # what the original's translate.py reads from params, besides the model's sizes
    params = read_checkpoint(tmp_path / "mt" / "sup" / "checkpoint.pth")["params"]
    assert {k: params[k] for k in ("n_words", "bos_index", "eos_index", "pad_index", "unk_index", "mask_index")} == {
        "n_words": len(model.dico), "bos_index": 0, "eos_index": 1, "pad_index": 2, "unk_index": 3, "mask_index": 5}
    lines = (small_sample / "valid.en-fr.en").read_text().splitlines()[:12]
    out = tmp_path / "out.fr"
    python("translate.py", "--model_path", tmp_path / "mt" / "sup" / "checkpoint.pth", "--src_lang", "en",
           "--tgt_lang", "fr", "--output_path", out, "--batch_size", "5", input="\n".join(lines) + "\n")
    assert len(out.read_text().splitlines()) == 12


def test_translation_steps_under_torchrun(small_sample, tmp_path):
    """AE, BT and MT with 2 gloo ranks: DistributedDataParallel over encoder and decoder, generation inside."""
    import os
    import subprocess
    import sys

    from conftest import ROOT
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29547",
                    "train.py", "--exp_name", "mt", "--exp_id", "ddp", "--dump_path", str(tmp_path), "--data_path",
                    str(small_sample), "--lgs", "en-fr", "--encoder_only", "false", "--ae_steps", "en,fr",
                    "--bt_steps", "en-fr-en", "--mt_steps", "fr-en", "--emb_dim", "16", "--n_layers", "1",
                    "--n_heads", "2", "--batch_size", "4", "--epoch_size", "48", "--max_epoch", "1",
                    "--log_interval", "1", "--max_len", "20"], cwd=ROOT, env=env, check=True, capture_output=True)
    log = (tmp_path / "mt" / "ddp" / "train.log").read_text()
    assert "AE-en:" in log and "BT-en-fr-en:" in log and "MT-fr-en:" in log and "valid_fr-en_mt_ppl" in log
    assert (tmp_path / "mt" / "ddp" / "train.log-1").exists()


def test_parallel_classification_batches():
    """The original's pc_step: label 1 keeps the translation, 0 takes another sentence of the batch, and the
    pair is `</s> x1 </s> x2 </s>` with continuous positions, each side with its language."""
    from xlm.objectives.pc import pc_batch

    g = torch.Generator().manual_seed(0)
    first = batch_sentences([torch.arange(20, 20 + n).numpy() for n in (3, 5, 2, 4, 6, 1)])
    second = batch_sentences([torch.arange(100 + 10 * i, 100 + 10 * i + n).numpy()
                              for i, n in enumerate((2, 4, 3, 5, 1, 2))])
    labels_seen = []
    for _ in range(20):
        x, lengths, positions, langs, labels = pc_batch(first, 0, second, 1, g)
        for row in range(6):
            n1 = int(first.lengths[row])
            tail = x[row, n1:int(lengths[row]) - 1].tolist()
            own = second.x[row, 1:int(second.lengths[row]) - 1].tolist()
            assert x[row, :n1].tolist() == first.x[row, :n1].tolist()
            assert (tail == own) == bool(labels[row])  # every second sentence here is distinct
            assert positions[row, :int(lengths[row])].tolist() == list(range(int(lengths[row])))
            assert langs[row, :n1 - 1].eq(0).all() and langs[row, n1 - 1:int(lengths[row])].eq(1).all()
        labels_seen += labels.tolist()
    assert 0.3 < sum(labels_seen) / len(labels_seen) < 0.7


def test_every_objective_in_one_translation_run_under_torchrun(small_sample, tmp_path):
    """CLM (decoder), MLM (encoder), PC and MT steps together in an encoder-decoder run, as the original allows,
    on 2 ranks: DDP must not wait for parameters a step leaves out."""
    dump = tmp_path / "dump"
    python("-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533", "train.py",
           "--exp_name", "mt", "--exp_id", "all", "--dump_path", dump, "--data_path", small_sample, *TINY,
           "--lgs", "en-fr", "--encoder_only", "false", "--clm_steps", "fr", "--mlm_steps", "en,en-fr",
           "--pc_steps", "en-fr", "--mt_steps", "en-fr", "--epoch_size", "160", "--max_epoch", "1",
           "--log_interval", "1")
    log = (dump / "mt" / "all" / "train.log").read_text()
    assert "CLM-fr:" in log and "MLM-en:" in log and "MLM-en-fr:" in log and "PC-en-fr:" in log and "MT-en-fr:" in log
    scores = scores_of(log)[0]
    assert {"valid_fr_clm_ppl", "valid_en_mlm_ppl", "valid_en_fr_mlm_ppl", "valid_en-fr_mt_ppl"} <= set(scores)


def test_a_cut_vocabulary_reads_the_references_words_beyond_it_as_unk(small_sample, tmp_path):
    """--max_vocab with parallel data: the reference files and BLEU read the ids beyond the cut as <unk>
    (they were looked up in the cut dictionary, a KeyError at the start of the run)."""
    train(small_sample, tmp_path, "cut", "--lgs", "en-fr", "--encoder_only", "false", "--mt_steps", "en-fr",
          "--max_vocab", "500", "--epoch_size", "32", "--max_epoch", "1", "--eval_bleu", "true")
    dump = tmp_path / "mt" / "cut"
    log = (dump / "train.log").read_text()
    assert "valid_en-fr_mt_bleu" in scores_of(log)[0]
    # as the original logs them (--max_len 30)
    assert re.search(r"MT training sentences of en-fr: removed \d+ of \d+, empty or longer than --max_len 30", log)
    reference = (dump / "hypotheses" / "ref.en-fr.valid.txt").read_text(encoding="utf-8")
    assert "<unk>" in reference and len(reference.splitlines()) == 150
