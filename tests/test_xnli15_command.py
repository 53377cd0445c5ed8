"""The original README's XNLI-15 MLM+TLM pretraining command, unchanged but for the sizes, on 15 toy
languages named like the XNLI ones: it runs, its rounds have the original's composition (5 MLM and
5 TLM draws, not the 43 steps each once), and evaluation subsamples as the original's does."""
import re
from collections import Counter

from conftest import python
from test_train import losses_of, scores_of
from xlm.data.binarized import binarize
from xlm.data.dictionary import Dictionary
from xlm.evaluation.lm import eval_subset

XNLI = "ar-bg-de-el-en-es-fr-hi-ru-sw-th-tr-ur-vi-zh"
LANGS = XNLI.split("-")
MLM_STEPS = ",".join(LANGS + [f"en-{lg}" for lg in LANGS if lg != "en"] + [f"{lg}-en" for lg in LANGS if lg != "en"])


def make_data(tmp_path):
    raw, data = tmp_path / "raw", tmp_path / "XLM15"
    python("tools/toy_languages.py", "--out", raw, "--langs", ",".join(LANGS), "--n_mono", "300", "--n_para", "120",
           "--n_valid", "30", "--n_test", "30", "--n_cls_train", "0", "--n_cls_eval", "0", "--vocab_size", "40")
    data.mkdir()
    counts = Counter(w for lg in LANGS for w in (raw / "mono" / f"train.{lg}").read_text().split())
    (data / "vocab").write_text("".join(f"{w} {c}\n" for w, c in sorted(counts.items(), key=lambda x: (-x[1], x[0]))))
    dico = Dictionary.read_vocab(data / "vocab")
    for split in ("train", "valid", "test"):
        for lg in LANGS:
            binarize(raw / "mono" / f"{split}.{lg}", dico, data / f"{split}.{lg}.pth", threads=1)
            if lg != "en":
                a, b = sorted(("en", lg))
                for side in (a, b):
                    binarize(raw / "para" / f"{split}.{a}-{b}.{side}", dico, data / f"{split}.{a}-{b}.{side}.pth",
                             threads=1)
    return data


def test_readme_xnli15_command(tmp_path):
    data = make_data(tmp_path)
    python("train.py", "--exp_name", "train_xnli_mlm_tlm", "--dump_path", tmp_path / "dumped", "--exp_id", "run",
           "--data_path", data, "--lgs", XNLI, "--clm_steps", "", "--mlm_steps", MLM_STEPS,
           "--emb_dim", "32", "--n_layers", "1", "--n_heads", "8", "--dropout", "0.1", "--attention_dropout", "0.1",
           "--gelu_activation", "true", "--batch_size", "4", "--bptt", "16",
           "--optimizer", "adam_inverse_sqrt,beta1=0.9,beta2=0.98,lr=0.0001,weight_decay=0",
           "--epoch_size", "200", "--max_epoch", "1", "--log_interval", "1",
           "--validation_metrics", "_valid_mlm_ppl", "--stopping_criterion", "_valid_mlm_ppl,10")
    log = (tmp_path / "dumped" / "train_xnli_mlm_tlm" / "run" / "train.log").read_text()
    # 200 sentences of 4 a step: 50 steps, 10 a round (the original), not 43
    rounds = losses_of(log)
    assert sorted(rounds) == [1, 2, 3, 4, 5]
    for line in rounds.values():
        keys = re.findall(r"MLM-([a-z-]+):", line)
        assert 1 <= len([k for k in keys if "-" not in k]) <= 5 and 1 <= len([k for k in keys if "-" in k]) <= 5
    scores = scores_of(log)[0]
    assert len([k for k in scores if k.endswith("_mlm_ppl")]) == 2 * (15 + 28 + 1)
    assert scores["valid_mlm_ppl"] > 1


class Params:
    def __init__(self, n):
        self.langs = (LANGS + [f"x{i}" for i in range(40)])[:n]


def test_evaluation_subsets_follow_the_original():
    assert eval_subset(Params(5), "valid", "en") == (1, None) and eval_subset(Params(5), "test", "en") == (1, None)
    assert eval_subset(Params(15), "valid", "en") == (5, 1500) and eval_subset(Params(15), "test", "en") == (10, 300)
    assert eval_subset(Params(40), "valid", "en") == (5, 1500) and eval_subset(Params(40), "test", "en") == (10, 600)
    assert eval_subset(Params(40), "valid", "x3") == (10, 600)
