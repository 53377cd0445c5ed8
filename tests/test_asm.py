"""train.py --asm true: an adaptive softmax output layer, in one process and under torchrun."""
import json
import os
import re
import subprocess
import sys

from conftest import ROOT, python

# a 3,193-word vocabulary: the last cluster (ids 2800+) holds rare subwords, 1% of the tokens, absent from
# about half of the batches of 64 tokens
ASM = ["--asm", "true", "--share_inout_emb", "false", "--asm_cutoffs", "500,2800", "--asm_div_value", "2"]
TINY = ["--emb_dim", "32", "--n_layers", "1", "--n_heads", "4", "--bptt", "32", "--max_len", "30"]


def flags(data, dump, exp_id, *more):
    return ["--exp_name", "asm", "--exp_id", exp_id, "--dump_path", str(dump), "--data_path", str(data), *TINY, *ASM,
            *map(str, more)]


def torchrun(port, *args):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                           str(port), "train.py", *args], cwd=ROOT, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]


def log_of(dump, exp_id):
    return (dump / "asm" / exp_id / "train.log").read_text()


def scores_of(log):
    return [json.loads(line.split("__log__:", 1)[1]) for line in log.splitlines() if "__log__:" in line]


def losses_of(log, name):
    """{iteration: loss of the objective `name`} from the progress lines."""
    return {int(m.group(1)): float(m.group(2)) for m in re.finditer(rf" - +(\d+) - .*? {name}: +([-\d.naif]+)", log)}


def test_one_process_learns_and_torchrun_matches_it(small_sample, tmp_path):
    """The loss falls; 2 ranks (gloo) x batch 2 give the losses of one process that accumulates the gradients
    of 2 batches of 2 (the ranks read batches 2i and 2i + 1 of its order), through steps in which a cluster
    gets no target on a rank (or on both), whose gradient DDP must then not wait for."""
    common = ["--lgs", "en", "--clm_steps", "en", "--optimizer", "adam,lr=0.003", "--max_epoch", 1,
              "--log_interval", 1, "--batch_size", 2]
    python("train.py", *flags(small_sample, tmp_path, "single", *common, "--accumulate_gradients", 2,
                              "--epoch_size", 48))
    torchrun(29571, *flags(small_sample, tmp_path, "ddp", *common, "--epoch_size", 24))
    single, ddp = (losses_of(log_of(tmp_path, run), "CLM-en") for run in ("single", "ddp"))
    assert len(single) == 24 and len(ddp) == 12
    losses = list(ddp.values())
    assert all(0 < v < 20 for v in losses) and sum(losses[-3:]) < 0.9 * sum(losses[:3]), losses
    for it in ddp:
        pair = (single[2 * it - 1] + single[2 * it]) / 2
        assert abs(pair - ddp[it]) < 1e-4 * pair, (it, pair, ddp[it])


def test_translation_under_torchrun(small_sample, tmp_path):
    """The decoder's adaptive softmax under torchrun; the encoder's, unused in translation, is frozen. Without
    --exp_id, both ranks use rank 0's random folder name."""
    torchrun(29572, *flags(small_sample, tmp_path, "", "--lgs", "en-fr", "--encoder_only", "false", "--mt_steps",
                           "fr-en", "--ae_steps", "en", "--batch_size", 4, "--epoch_size", 24, "--max_epoch", 1,
                           "--log_interval", 1))
    [folder] = (tmp_path / "asm").iterdir()
    assert sorted(p.name for p in folder.glob("train.log*")) == ["train.log", "train.log-1"]
    log = log_of(tmp_path, folder.name)
    assert len(losses_of(log, "MT-fr-en")) == 3 and len(losses_of(log, "AE-en")) == 3
    assert scores_of(log)[0]["valid_fr-en_mt_ppl"] > 0


def test_bf16_autocast(small_sample, tmp_path):
    """The adaptive softmax runs in float32 inside a bf16 (or fp16) run: torch's mixes the dtypes of its
    rows under the CPU's autocast and stopped at the first step."""
    proc = python("train.py", *flags(small_sample, tmp_path, "bf16", "--lgs", "en-fr", "--encoder_only", "false",
                                     "--mlm_steps", "en", "--mt_steps", "fr-en", "--bf16", "true", "--batch_size", 4,
                                     "--epoch_size", 24, "--max_epoch", 1, "--log_interval", 1), check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    scores = scores_of(log_of(tmp_path, "bf16"))[0]
    assert 0 < scores["valid_fr-en_mt_ppl"] < 1e5 and 0 < scores["valid_en_mlm_ppl"] < 1e5
