import importlib.util
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

import xlm.model.linear as linear_module

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "sample"

# The suite starts the scripts hundreds of times: where the environment turns Python's bytecode cache off
# (PYTHONDONTWRITEBYTECODE), each start compiled xlm's modules again (0.1 s of train.py's 2 s start-up).
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False


def run(args, input=None, check=True, cwd=None):
    """Run a command of the project as a user would; returns the CompletedProcess (text mode)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    proc = subprocess.run(args, input=input, capture_output=True, text=True, cwd=cwd or ROOT, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def python(*args, **kw):
    return run([sys.executable, *map(str, args)], **kw)


def load_script(path, name=None):
    """A script of the project (tools/ is not a package) as a module, registered in sys.modules, where
    dataclasses and pickling look their module up."""
    name = name or Path(path).stem
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def main_in_process(main, capsys, *args):
    """A script's main(argv) run in this process (a subprocess per call would cost seconds each):
    its return code and captured output, as a CompletedProcess has them."""
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return types.SimpleNamespace(returncode=code, stdout=out, stderr=err)


@pytest.fixture
def onednn(monkeypatch):
    """Float32 linear layers through oneDNN in this process, as on an AMD CPU with AVX-512, whatever this one
    (`xlm.model.linear.onednn_chosen`): its paths are tested on AVX2 machines too."""
    if not linear_module.has_onednn():
        pytest.skip("this torch has no oneDNN")
    monkeypatch.setattr(linear_module, "onednn_chosen", lambda: True)


@pytest.fixture(scope="session")
def raw_lines():
    """2,000 real English sentences of the bundled sample."""
    with open(SAMPLE / "mono" / "train.en", encoding="utf-8") as f:
        return [next(f).rstrip("\n") for _ in range(2000)]


@pytest.fixture(scope="session")
def tokenized_file(tmp_path_factory, raw_lines):
    """The same sentences through tools/tokenize.sh."""
    path = tmp_path_factory.mktemp("tok") / "train.en"
    out = run(["bash", "tools/tokenize.sh", "en"], input="\n".join(raw_lines) + "\n").stdout
    path.write_text(out, encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def sample_data(tmp_path_factory):
    """The README's pipeline (run-sample.sh) on the bundled sample, once per test session, into a folder
    whose path has a space, as users' paths may."""
    out = tmp_path_factory.mktemp("processed") / "the sample"
    run(["env", f"OUT={out}", "N_CODES=3000", "PRETRAIN=0", "bash", str(ROOT / "run-sample.sh")])
    return out


@pytest.fixture(scope="session")
def small_sample(sample_data, tmp_path_factory):
    """The processed sample with 150-sentence valid and test sets, so that evaluation is quick."""
    out = tmp_path_factory.mktemp("small") / "sample"
    out.mkdir()
    for pth in sample_data.glob("*.pth"):
        name = pth.name[:-len(".pth")]
        if name.startswith("train."):
            (out / pth.name).symlink_to(pth)
        else:
            lines = (sample_data / name).read_text(encoding="utf-8").splitlines()[:150]
            (out / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
            python("preprocess.py", sample_data / "vocab", out / name)
    return out


def train_reverser(n_words, steps=400, first_word=4, seed=0):
    """A tiny encoder-decoder trained for a few seconds to reverse sequences of the words
    first_word..n_words-1: outputs of varied lengths and content for decoding tests."""
    import torch
    from xlm.data.datasets import batch_sentences
    from xlm.model.transformer import TransformerConfig, TransformerModel

    torch.manual_seed(seed)
    kw = dict(n_words=n_words, emb_dim=32, n_layers=2, n_heads=4, n_langs=2)
    enc, dec = TransformerModel(TransformerConfig(**kw)), TransformerModel(TransformerConfig(**kw, is_decoder=True))
    opt = torch.optim.Adam(list(enc.parameters()) + list(dec.parameters()), lr=3e-3)
    g = torch.Generator().manual_seed(seed + 1)
    for _ in range(steps):
        seqs = [torch.randint(first_word, n_words, (int(n),), generator=g).numpy()
                for n in torch.randint(1, 7, (32,), generator=g)]
        src, tgt = batch_sentences(seqs), batch_sentences([s[::-1] for s in seqs])
        pred = torch.arange(tgt.x.shape[1])[None, :] < (tgt.lengths[:, None] - 1)
        loss = dec(tgt.x, tgt.lengths, langs=1, causal=True, src_enc=enc(src.x, src.lengths, langs=0),
                   src_len=src.lengths, pred_mask=pred, y=tgt.x[:, 1:][pred[:, :-1]])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return enc.eval(), dec.eval()


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request):
    """Torch's CPU threads for the test: MKL's roundings of a few numbers of rows depend on them."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


@pytest.fixture
def keep_signal_handlers():
    """A Trainer built in the test process handles SIGUSR1, SIGTERM and SIGINT; give the process its own back."""
    import signal
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


# a 2-rank CLM run of 4 epochs of 6 iterations (a checkpoint at each end of epoch), logged at every iteration
TWO_RANK_FLAGS = ["train.py", "--exp_name", "test", "--lgs", "en", "--clm_steps", "en", "--max_epoch", "4",
                  "--epoch_size", "24", "--batch_size", "4", "--log_interval", "1", "--optimizer", "adam,lr=0.001",
                  "--emb_dim", "32", "--n_layers", "2", "--n_heads", "4", "--bptt", "32"]


def free_port(low=29600, high=29999):
    """A port nothing listens on, at random: tests that run at the same time do not meet."""
    import random
    import socket
    while True:
        port = random.randint(low, high)
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) != 0:
                return port


def torchrun(*args):
    """`torchrun --nproc_per_node 2 ...` (gloo on the CPU), and the environment to start it in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    return ([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
             str(free_port()), *map(str, args)], {**env, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})


@pytest.fixture(scope="session")
def two_rank_run(small_sample, tmp_path_factory):
    """The folder of an uninterrupted torchrun run of TWO_RANK_FLAGS."""
    dump = tmp_path_factory.mktemp("two_ranks")
    command, env = torchrun(*TWO_RANK_FLAGS, "--exp_id", "whole", "--dump_path", dump, "--data_path", small_sample)
    subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True)
    return dump / "test" / "whole"


@pytest.fixture(scope="session")
def two_rank_reference(two_rank_run):
    """train.log of the uninterrupted run: what killed, signalled and resumed runs of the same command must
    reproduce."""
    return (two_rank_run / "train.log").read_text()


def random_hf_xlm(path, words, seed=0, bias_scale=0.1, **config):
    """A random transformers XLMWithLMHeadModel (2 x 32) over `words`, saved in path with a vocab.json in
    HF's '</w>' convention; languages l0, l1, ... unless config gives lang2id."""
    import json

    import torch
    import transformers
    torch.manual_seed(seed)
    config.setdefault("lang2id", {f"l{i}": i for i in range(config.get("n_langs", 1))})
    model = transformers.XLMWithLMHeadModel(transformers.XLMConfig(vocab_size=len(words), emb_dim=32, n_layers=2,
                                                                   n_heads=4, **config)).eval()
    with torch.no_grad():  # HF initialises biases and LayerNorms to constants: randomise them so they count
        for name, p in model.named_parameters():
            if name.endswith("bias") or "layer_norm" in name:
                p.add_(torch.randn_like(p) * bias_scale)
    model.save_pretrained(path)
    vocab = {(w if i < 14 else w[:-2] if w.endswith("@@") else w + "</w>"): i for i, w in enumerate(words)}
    (path / "vocab.json").write_text(json.dumps(vocab))
    return model


SCONTROL = '''#!{python}
import re, sys
if sys.argv[1:3] == ["show", "hostnames"]:  # node[01-02,05],login -> node01 node02 node05 login
    for prefix, ranges in re.findall(r"([^,\\[]+)(?:\\[([^\\]]*)\\])?", sys.argv[3]):
        for r in ranges.split(",") if ranges else []:
            a, _, b = r.partition("-")
            for i in range(int(a), int(b or a) + 1):
                print(f"{{prefix}}{{i:0{{len(a)}}d}}")
        if not ranges:
            print(prefix)
elif sys.argv[1] == "requeue":
    with open({log!r}, "a") as f:
        f.write(" ".join(sys.argv[1:]) + "\\n")
else:
    sys.exit(f"scontrol stand-in: {{sys.argv[1:]}} not known")
'''


@pytest.fixture
def scontrol(tmp_path, monkeypatch):
    """A directory holding the stand-in scontrol, put first on PATH; returns the file it records requeues in."""
    bin_dir, log = tmp_path / "bin", tmp_path / "requeued"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(SCONTROL.format(python=sys.executable, log=str(log)))
    (bin_dir / "scontrol").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return log
