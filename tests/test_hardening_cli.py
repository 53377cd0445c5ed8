"""Command lines a careless user types: refused before any work with one line naming the flag, output
locations checked first, and no experiment folder left behind by a run that fails in its set-up."""
import argparse
import importlib.util
import io
import json
import os
import pickle
import subprocess
import sys
from contextlib import contextmanager

import pytest
import torch

from conftest import ROOT, load_script, python
from test_glue_xnli import finetune_flags, toy_tasks  # noqa: F401  (the toy XNLI/GLUE data)
from xlm.data.dictionary import SPECIAL_WORDS, Dictionary
from xlm.fileio import DataError
from xlm.model.checkpoint import checkpoint_payload, read_checkpoint, save_checkpoint
from xlm.model.transformer import TransformerConfig, TransformerModel
from xlm.train.finetune import build_parser as finetune_parser, check_task_files, parse_params as finetune_params
from xlm.train.options import parse_params

TINY = ["--emb_dim", "32", "--n_layers", "2", "--n_heads", "4", "--batch_size", "8", "--bptt", "32", "--max_len", "40",
        "--epoch_size", "16", "--max_epoch", "1"]


def one_error_line(proc, message):
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and message in lines[-1], proc.stderr


@pytest.mark.parametrize("flags, message", [
    (["--bptt", "1000"], "--bptt 1000 is longer than the 512 positions"),
    (["--n_heads", "0"], "--n_heads must be >= 1"),
    (["--encoder_only", "false", "--bt_steps", "en-fr"], "--bt_steps: cannot parse 'en-fr' (expected three languages, "
                                                        "the first and last the same, e.g. en-fr-en)"),
    (["--emb_dim", "0"], "--emb_dim must be >= 1, got 0"),
    (["--emb_dim", "30"], "--emb_dim 30 must be a multiple of --n_heads 4"),
    (["--n_layers", "-1"], "--n_layers -1"),
    (["--encoder_only", "false", "--mlm_steps", "", "--ae_steps", "en", "--n_layers", "0"], "--n_layers 0"),
    (["--optimizer", "adam,lr=-1"], "--optimizer: lr=-1 must not be negative"),
    (["--optimizer", "adam,eps=-0.1"], "--optimizer: eps=-0.1 must not be negative"),
    (["--optimizer", "adam,beta1=1.5"], "--optimizer: Adam: invalid"),
    (["--optimizer", "nadam,lr=0.1"], "--optimizer: unknown optimizer 'nadam'"),
    (["--optimizer", "adam,lr"], "--optimizer: 'lr' must be key=number"),
    (["--optimizer", "sgd,lr=0.1,momentum=0.9,dampening=2,nesterov=1"], "--optimizer: "),
    (["--optimizer", "adam_cosine,lr=0.1,period_mult=0.5"], "period_mult >= 1"),
    (["--batch_size", "0"], "--batch_size >= 1"),
    (["--epoch_size", "0"], "--epoch_size must be positive"),
    (["--max_len", "-1"], "--max_len must be >= 0"),
    (["--word_dropout", "0.1"], "--word_dropout 0.1 is the noise of --ae_steps' inputs, and this run has no"),
    (["--lg_sampling_factor", "0"], "--lg_sampling_factor must be -1 (off) or > 0"),
    (["--pc_steps", "en-fr", "--batch_size", "1"], "--pc_steps needs --batch_size >= 2"),
    (["--checkpoint_every", "-1"], "--checkpoint_every must be >= 0 (0: off)"),
    (["--dropout", "1.5"], "--dropout must be in [0, 1)"),
    (["--attention_dropout", "-1"], "--attention_dropout must be in [0, 1)"),
    (["--seed", "-1"], "--seed"),
    (["--max_vocab", "5"], "--max_vocab 5"),
    (["--max_epoch", "-1"], "--max_epoch must be >= 0 (0: set up and stop"),
    (["--lambda_mlm", "0"], "--lambda_* of 0"),
    (["--lambda_mlm", "0:1,100:0"], "--lambda_* of 0"),
    (["--lambda_mlm", "-1"], "--lambda_mlm: a loss coefficient must not be negative"),
    (["--asm", "true", "--share_inout_emb", "false", "--asm_cutoffs", "50,20"], "--asm_cutoffs '50,20'"),
    (["--asm", "true", "--share_inout_emb", "false", "--asm_div_value", "0.5"], "--asm_div_value must be > 1"),
    (["--use_memory", "true", "--mem_enc_positions", "1", "--mem_knn", "0"], "--mem_knn must be >= 1"),
    (["--use_memory", "true", "--mem_enc_positions", "1", "--mem_heads", "0"], "--mem_heads must be >= 1"),
    (["--use_memory", "true", "--mem_enc_positions", "1", "--mem_values_optimizer", "adam,lr=-2"],
     "--mem_values_optimizer: lr=-2"),
    (["--exp_id", "../x"], "--exp_id '../x' must be a folder below --dump_path"),
    (["--exp_name", "a/../../x"], "--exp_name 'a/../../x' must be a folder below --dump_path"),
    (["--exp_name", "/tmp/x"], "--exp_name '/tmp/x' must be a folder below --dump_path"),
    (["--exp_name", "./"], "--exp_name './' must be a folder below --dump_path"),
    (["--exp_id", ".."], "--exp_id '..'"),
    (["--lgs", "en,fr"], "languages are separated by '-'"),
    (["--encoder_only", "false", "--ae_steps", "en", "--reload_model", "m.pth"], "'encoder_path,decoder_path'"),
    (["--optimizer", "adam,lr=0.001,lr=0.1"], "--optimizer: lr is given twice"),
    (["--lambda_mlm", "nan"], "--lambda_mlm: 'nan' is not a number"),
    (["--lambda_mlm", "0:1,10:inf"], "--lambda_mlm: '10:inf' is not 'iteration:value'"),
    (["--word_mask_keep_rand", "0.8,0.1,x"], "--word_mask_keep_rand: expected 3 comma-separated numbers"),
    (["--clm_steps", "en", "--context_size", "31"], "--context_size 31 leaves no token to predict"),
    (["--use_memory", "true", "--mem_enc_positions", "abc"], "--mem_enc_positions: 'abc' is not a layer number"),
    (["--use_memory", "true", "--mem_enc_positions", "0+,0+"], "--mem_enc_positions: '0+' appears twice"),
    (["--use_memory", "true", "--mem_dec_positions", "0"], "--mem_dec_positions: a model with --encoder_only true"),
    (["--use_memory", "true", "--mem_enc_positions", "0", "--mem_query_batchnorm", "true", "--mlm_steps", "en,en-fr"],
     "--mem_query_batchnorm true with --mlm_steps: these steps train on padded sentence batches"),
])
def test_impossible_flags_are_refused_at_parse_time(tmp_path, flags, message):
    argv = ["--exp_name", "t", "--exp_id", "x", "--dump_path", str(tmp_path), "--data_path", str(tmp_path),
            "--lgs", "en-fr", "--mlm_steps", "en", *TINY]
    with pytest.raises(DataError) as e:
        parse_params(argv + flags)
    assert message in str(e.value)


def test_numbers_are_read_as_the_original_reads_them(tmp_path):
    """Loss coefficients and masking probabilities go through float(), as in the original (1e-3 included);
    optimizer options are plain decimals there too. A context just short of the stream row still predicts;
    a longer one only evaluates, which predicts every token."""
    argv = ["--exp_name", "t", "--exp_id", "x", "--dump_path", str(tmp_path), "--data_path", str(tmp_path),
            "--lgs", "en-fr", "--mlm_steps", "en", *TINY]
    params = parse_params(argv + ["--lambda_mlm", "1e-3", "--lambda_clm", "0:1e-1,10:2E-2", "--word_mask_keep_rand",
                                  "8e-1,1e-1,1e-1", "--clm_steps", "en", "--context_size", "30"])
    assert params.lambda_mlm == "1e-3" and params.word_mask == 0.8
    assert parse_params(argv + ["--clm_steps", "en", "--context_size", "40", "--eval_only", "true"]).context_size == 40


def test_a_memory_query_batchnorm_trains_on_streams_alone(tmp_path):
    """As the original (which stops at the first batch of sentences): padding would enter the batch
    statistics. Streams train with it, and every step evaluates with it (batch normalisation's running
    statistics then)."""
    argv = ["--exp_name", "t", "--exp_id", "x", "--dump_path", str(tmp_path), "--data_path", str(tmp_path),
            "--lgs", "en-fr", *TINY, "--use_memory", "true", "--mem_enc_positions", "0",
            "--mem_query_batchnorm", "true"]
    assert parse_params(argv + ["--mlm_steps", "en", "--clm_steps", "en,fr"]).mem_query_batchnorm
    assert parse_params(argv + ["--mlm_steps", "en,en-fr", "--eval_only", "true"]).mem_query_batchnorm
    assert parse_params(argv + ["--mlm_steps", "en", "--pc_steps", "en-fr", "--lambda_pc", "0"]).mem_query_batchnorm
    for steps in (["--clm_steps", "en-fr"], ["--pc_steps", "en-fr"], ["--encoder_only", "false", "--ae_steps", "en"]):
        with pytest.raises(DataError, match=f"--mem_query_batchnorm true with --{steps[-2][2:]}"):
            parse_params(argv + steps)


def test_torch_distributed_launch_spelling_of_the_local_rank(tmp_path):
    argv = ["--exp_name", "t", "--exp_id", "x", "--dump_path", str(tmp_path), "--data_path", str(tmp_path),
            "--lgs", "en-fr", "--mlm_steps", "en", *TINY]
    assert parse_params(argv + ["--local-rank=1"]).local_rank == 1  # torch.distributed.launch's
    assert parse_params(argv + ["--local_rank", "1"]).local_rank == 1


def test_an_abbreviation_means_the_original_flag_it_starts(tmp_path, capsys):
    """The original's commands may shorten a flag to any start that names one of its flags; xlm's own flags
    must not make such a start ambiguous (--tokens_per_batch_padded, --compile, --log_interval, --fp16 of
    glue-xnli.py, --device of translate.py, ...). A start ambiguous in the original stays an error."""
    argv = ["--exp_name", "t", "--exp_id", "x", "--dump_path", str(tmp_path), "--data_path", str(tmp_path),
            "--lgs", "en-fr", "--mlm_steps", "en", *TINY]
    params = parse_params(argv + ["--tokens", "500", "--clm_steps", "en", "--co=3", "--lo", "1",
                                  "--tokens_per_batch_p", "true"])
    assert (params.tokens_per_batch, params.context_size, params.local_rank) == (500, 3, 1)
    assert params.tokens_per_batch_padded and params.command.endswith("--co=3 --lo 1 --tokens_per_batch_p true")
    with pytest.raises(SystemExit):
        parse_params(argv + ["--max", "50"])  # --max_len, --max_vocab, ...
    assert "ambiguous option: --max" in capsys.readouterr().err
    tuned = finetune_parser().parse_args(["--b", "8", "--f", "1:2"])
    assert (tuned.batch_size, tuned.finetune_layers, tuned.fp16) == (8, "1:2", False)
    args = load_script(ROOT / "translate.py").parse_args(["--d", str(tmp_path), "--model_path", "m.pth",
                                                          "--output_path", str(tmp_path / "out"), "--src", "en",
                                                          "--tgt", "fr", "--b", "4"])
    assert (args.dump_path, args.batch_size, args.beam_size) == (str(tmp_path), 4, 1)


def test_resuming_with_other_ranks_or_seed_names_what_to_change():
    from xlm.data.iterators import BatchIterator
    saved = BatchIterator(list(range(10)), seed=1, rank=0, world_size=2).state_dict()
    with pytest.raises(DataError, match=r"saved by a run of 2 process\(es\), and this one has 1: resume it with 2"):
        BatchIterator(list(range(10)), seed=1).load_state_dict(saved)
    with pytest.raises(DataError, match="drawn with another --seed"):
        BatchIterator(list(range(10)), seed=2, rank=0, world_size=2).load_state_dict(saved)


def test_a_checkpoint_of_another_number_of_ranks_points_to_reload_model(small_sample, tmp_path,
                                                                        keep_signal_handlers):
    from xlm.model.checkpoint import read_checkpoint, save_checkpoint
    from xlm.train.loop import main
    main(argv(small_sample, tmp_path, "two"))
    path = tmp_path / "t" / "two" / "checkpoint.pth"
    data = read_checkpoint(str(path))
    for state in data["train_state"]["iterators"][0].values():
        state["world_size"] = 2  # as a 2-rank run saves it
    save_checkpoint(data, str(path))
    message = setup_error(small_sample, tmp_path, "other", "--reload_checkpoint", path)
    assert message.startswith(f"{path}: its data positions were saved by a run of 2 process(es), and this one has "
                              "1: resume it with 2; or start a new run from its weights (--reload_model")


def test_a_checkpoint_that_cannot_be_written_is_one_error_and_the_last_one_stays(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pth"
    save_checkpoint({"a": 1}, path)
    before = path.read_bytes()

    def disk_full(obj, f):
        f.write(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1607040 vs 1606928")
    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(DataError, match=r"checkpoint.pth: cannot write it \(.*unexpected pos.*\); the previous "
                                        "file, if any, is kept"):
        save_checkpoint({"a": 2}, path)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pth"]


def test_help_lists_the_flags_a_switch_adds(capsys):
    """The memory and adaptive-softmax flags exist only with --use_memory / --asm, as in the original;
    --help after the switch lists them."""
    with pytest.raises(SystemExit):
        parse_params(["--use_memory", "true", "--asm", "true", "--help"])
    shown = capsys.readouterr().out
    assert "--mem_enc_positions" in shown and "--mem_knn" in shown and "--asm_cutoffs" in shown
    with pytest.raises(SystemExit):
        parse_params(["--help"])
    assert "--mem_knn" not in capsys.readouterr().out


def test_every_flag_has_a_help_line(monkeypatch):
    """train.py (with the flags --use_memory and --asm add), glue-xnli.py and translate.py explain each flag in
    --help."""
    parsers = []

    def captured(parser, args=None, namespace=None):
        parsers.append(parser)
        raise SystemExit(0)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", captured)
    for parse in (lambda: parse_params(["--use_memory", "true", "--asm", "true"]),
                  lambda: finetune_params([]),
                  lambda: load_script(ROOT / "translate.py").parse_args([])):
        with pytest.raises(SystemExit):
            parse()
    assert len(parsers) == 3
    assert [a.option_strings[0] for p in parsers for a in p._actions if not a.help] == []


def argv(data, dump, exp_id, *flags):
    return ["--exp_name", "t", "--exp_id", exp_id, "--dump_path", str(dump), "--data_path", str(data),
            "--lgs", "en-fr", "--mlm_steps", "en", *TINY, *map(str, flags)]


def test_train_refuses_before_making_the_experiment_folder(tmp_path):
    dump = tmp_path / "dumped"
    one_error_line(python("train.py", *argv(tmp_path, dump, "a", "--bptt", "1000"), check=False),
                   "--bptt 1000 is longer than the 512 positions")
    assert not dump.exists()


def setup_error(*args):
    from xlm.train.loop import main
    with pytest.raises(DataError) as e:
        main(argv(*args))
    return str(e.value)


def test_a_run_failing_in_its_setup_leaves_no_folder(small_sample, tmp_path, keep_signal_handlers, monkeypatch):
    """Errors found once the data is read: the folders the run made are removed, an existing one is kept."""
    assert "unknown metrics valid_xx_mlm_ppl" in setup_error(small_sample, tmp_path / "new", "a",
                                                             "--stopping_criterion", "valid_xx_mlm_ppl,1")
    assert "--asm_cutoffs 8000,20000: each cutoff must be below the" in setup_error(
        small_sample, tmp_path / "new", "b", "--asm", "true", "--share_inout_emb", "false")
    assert not (tmp_path / "new").exists()
    kept = tmp_path / "old" / "t" / "c"
    kept.mkdir(parents=True)
    (kept / "notes.txt").write_text("mine")
    assert "unknown metrics" in setup_error(small_sample, tmp_path / "old", "c", "--stopping_criterion", "nope,1")
    assert (kept / "notes.txt").read_text() == "mine"
    # a run beside it in the folders it made (a sweep's other exp_id, started at once) keeps its own
    from xlm.train import loop

    def sibling_starts_then_fails(params):
        (tmp_path / "swept" / "t" / "other").mkdir(parents=True)
        (tmp_path / "swept" / "t" / "other" / "train.log").write_text("running")
        raise DataError("this run's own mistake")

    monkeypatch.setattr(loop, "Trainer", sibling_starts_then_fails)
    assert setup_error(small_sample, tmp_path / "swept", "d") == "this run's own mistake"
    assert os.listdir(tmp_path / "swept" / "t") == ["other"]


def test_a_rerun_after_the_stopping_criterion_ended_the_run_trains_no_more(small_sample, tmp_path,
                                                                          keep_signal_handlers):
    """As after --max_epoch, a rerun of a finished run does nothing (it trained an epoch more); and a rerun
    that follows another metric starts its best and count afresh, with a warning."""
    from xlm.model.checkpoint import read_checkpoint, save_checkpoint
    from xlm.train.loop import main
    criterion = ["--stopping_criterion", "_valid_en_mlm_ppl,0"]
    main(argv(small_sample, tmp_path, "s", *criterion, "--max_epoch", 1))
    path = tmp_path / "t" / "s" / "checkpoint.pth"
    ckpt = read_checkpoint(str(path))
    assert ckpt["train_state"]["stopping_metric"] == "_valid_en_mlm_ppl"
    ckpt["train_state"]["decrease_counts"] = 1  # as the criterion leaves a run it ended
    save_checkpoint(ckpt, str(path))
    main(argv(small_sample, tmp_path, "s", *criterion, "--max_epoch", 3))
    log = (tmp_path / "t" / "s" / "train.log").read_text()
    assert log.rstrip().endswith("The stopping criterion ended this run at epoch 0: nothing more to do.")
    assert "Starting epoch 1" not in log
    main(argv(small_sample, tmp_path, "s", "--stopping_criterion", "valid_en_mlm_acc,0", "--max_epoch", 2))
    log = (tmp_path / "t" / "s" / "train.log").read_text()
    assert "--stopping_criterion follows valid_en_mlm_acc, where the saved run followed _valid_en_mlm_ppl" in log
    assert "Starting epoch 1" in log and "New best validation score" in log
    # a perplexity without its '_' (higher taken as better) is never better while training lowers it; the
    # line shows the count before the epoch's, as the original's
    main(argv(small_sample, tmp_path, "u", "--stopping_criterion", "valid_en_mlm_ppl,1", "--max_epoch", 5))
    log = (tmp_path / "t" / "u" / "train.log").read_text()
    assert "Not a better validation score (0 / 1)." in log and "Not a better validation score (1 / 1)." in log
    assert "Stopping criterion has been below its best value for more than 1 epochs" in log
    assert "Starting epoch 3" not in log


def test_a_parallel_sentence_longer_than_the_positions_stops_the_run_at_its_start(small_sample, sample_data,
                                                                                    tmp_path, keep_signal_handlers):
    """Evaluation reads every sentence (training drops those above --max_len): one the model's 512 positions
    cannot hold is named when the run starts, not after an epoch of training; but not one whose other side
    is empty (the evaluation leaves the pair out, as the original), nor one of a pair that no step evaluates
    (PC's: the original has no PC evaluation)."""
    from xlm.train.loop import main
    data = tmp_path / "data"
    data.mkdir()
    for f in small_sample.glob("*.pth"):
        if not f.name.startswith("valid.en-fr."):
            (data / f.name).symlink_to(f)

    def valid_pairs(en, fr):
        for lg, text in (("en", en), ("fr", fr)):
            (data / f"valid.en-fr.{lg}").write_text(text)
            (data / f"valid.en-fr.{lg}.pth").unlink(missing_ok=True)
            python("preprocess.py", sample_data / "vocab", data / f"valid.en-fr.{lg}")

    long = " ".join(["le"] * 600) + "\n"
    valid_pairs("the cat\nthe\n", "le chat\n" + long)
    message = setup_error(data, tmp_path / "dumped", "long", "--mlm_steps", "en-fr")
    assert message == f"{data}/valid.en-fr.fr.pth: sentence 1 has 600 tokens, more than the 510 that the model's " \
        "512 positions hold with the two </s>"
    main(argv(data, tmp_path / "dumped", "pc", "--mlm_steps", "en", "--pc_steps", "en-fr", "--epoch_size", "8"))
    valid_pairs("the cat\n\n", "le chat\n" + long)
    main(argv(data, tmp_path / "dumped", "empty", "--mlm_steps", "en-fr", "--epoch_size", "8"))
    assert "valid_en_fr_mlm_ppl" in (tmp_path / "dumped" / "t" / "empty" / "train.log").read_text()


def test_max_len_0_or_past_the_positions_keeps_every_training_sentence_and_names_one_the_model_cannot_hold(
        small_sample, sample_data, tmp_path, keep_signal_handlers):
    """--max_len 0 is the original's "no limit", and a --max_len past the positions (600; 256 with PC, whose
    pair is one sequence) its too: the original then fails in an embedding lookup when a sentence beyond
    the positions is drawn, and runs where none is there; TLM reads each side from position 0."""
    from xlm.train.loop import main
    data = tmp_path / "data"
    data.mkdir()
    for f in small_sample.glob("*.pth"):
        if not f.name.startswith("train.en-fr."):
            (data / f.name).symlink_to(f)
    for lg, n in (("en", 300), ("fr", 250)):  # each side fits the 512 positions, the two together do not
        (data / f"train.en-fr.{lg}").write_text("le chat\n" + " ".join(["le"] * n) + "\n")
        python("preprocess.py", sample_data / "vocab", data / f"train.en-fr.{lg}")
    main(argv(data, tmp_path / "dumped", "tlm", "--mlm_steps", "en-fr", "--max_len", "0", "--epoch_size", "4"))
    log = (tmp_path / "dumped" / "t" / "tlm" / "train.log").read_text()
    assert "removed" not in log and "__log__" in log  # the long pair is kept, not left out
    message = setup_error(data, tmp_path / "dumped", "pc", "--mlm_steps", "", "--pc_steps", "en-fr", "--max_len", "0")
    for max_len in ("0", "300"):
        message = setup_error(data, tmp_path / "dumped", f"pc{max_len}", "--mlm_steps", "", "--pc_steps", "en-fr",
                              "--max_len", max_len)
        assert message == f"{data}/train.en-fr.en.pth, {data}/train.en-fr.fr.pth: pair 1 makes a sequence of 553 " \
            f"positions with its three </s>, more than the model's 512 (--max_len {max_len} keeps it)"
    # at 256, 2 x 256 + 3 > 512 too, but the long pair is left out (300 > 256): it trains, as the original
    main(argv(data, tmp_path / "dumped", "pc256", "--mlm_steps", "", "--pc_steps", "en-fr", "--max_len", "256"))
    assert "__log__" in (tmp_path / "dumped" / "t" / "pc256" / "train.log").read_text()
    (data / "train.en-fr.fr").write_text("le chat\n" + " ".join(["le"] * 600) + "\n")
    (data / "train.en-fr.fr.pth").unlink()
    python("preprocess.py", sample_data / "vocab", data / "train.en-fr.fr")
    for max_len in ("0", "600"):
        message = setup_error(data, tmp_path / "dumped", f"long{max_len}", "--mlm_steps", "en-fr", "--max_len", max_len)
        assert message == f"{data}/train.en-fr.fr.pth: sentence 1 has 600 tokens, more than the 510 that the " \
            f"model's 512 positions hold with the two </s> (--max_len {max_len} keeps it)"


def test_what_a_resume_or_reload_cannot_keep_is_warned_about(small_sample, tmp_path, keep_signal_handlers):
    """A rerun that adds a step, or whose flags build another model with weights of the same shapes, or
    whose languages take other ids, goes on with a warning for each; so do metrics read the wrong way
    round or not computed (as the original, which warns at each evaluation) and an evaluation of random
    weights."""
    from xlm.train.loop import main

    def log(exp_id):
        return (tmp_path / "t" / exp_id / "train.log").read_text()

    main(argv(small_sample, tmp_path, "a"))
    main(argv(small_sample, tmp_path, "a", "--max_epoch", 2, "--clm_steps", "en", "--n_heads", 2,
              "--validation_metrics", "valid_en_mlm_ppl,_valid_en_mlm_acc,valid_xx_mlm_ppl", "--batch_size", 4))
    text = log("a")
    assert "resumed with other flags than the run's (--batch_size 8 there, 4 here)" in text
    assert "Resumed from" in text and "no saved position for the causal batches of en: they start afresh" in text
    assert "was trained with other flags (--n_heads 4 there, 2 here)" in text
    assert "valid_en_mlm_ppl: a higher perplexity is taken as better; write _valid_en_mlm_ppl" in text
    assert "_valid_en_mlm_acc: the leading '_' takes a lower score as better" in text
    assert "--validation_metrics: unknown metrics valid_xx_mlm_ppl, for which no best model is saved; this run " \
           "computes valid_en_clm_ppl" in text
    assert text.count('Metric "valid_xx_mlm_ppl" not found in scores!') == 1  # at the one evaluation
    assert (tmp_path / "t" / "a" / "best-valid_en_mlm_ppl.pth").exists()
    assert not (tmp_path / "t" / "a" / "best-valid_xx_mlm_ppl.pth").exists()
    model = tmp_path / "t" / "a" / "checkpoint.pth"
    main(["--exp_name", "t", "--exp_id", "b", "--dump_path", str(tmp_path), "--data_path", str(small_sample),
          "--lgs", "de-en", "--mlm_steps", "en", *TINY, "--reload_model", str(model), "--n_heads", "2",
          "--eval_only", "true"])
    assert "other language ids (de 0 here, absent there, en 1 here, 0 there)" in log("b")
    main(argv(small_sample, tmp_path, "c", "--eval_only", "true"))
    assert "--eval_only without --reload_model or --reload_checkpoint: evaluating randomly initialised" in log("c")


def test_a_second_run_in_a_running_runs_folder_is_refused_and_removes_nothing(small_sample, tmp_path):
    """While a run holds its experiment folder, a second run there stops with one line (even one whose flags
    fail later, which would otherwise remove the folder it thought it made); once the first ends, the
    folder is free."""
    from xlm.train.experiment import hold_folder, release_folders
    folder = tmp_path / "t" / "busy"
    folder.mkdir(parents=True)
    (folder / "train.log").write_text("the first run's log")
    hold_folder(str(folder))
    try:
        proc = python("train.py", *argv(small_sample, tmp_path, "busy", "--stopping_criterion", "nope,1"), check=False)
        one_error_line(proc, f"{folder}: another run is using this experiment folder")
        assert (folder / "train.log").read_text() == "the first run's log"
    finally:
        release_folders()
    proc = python("train.py", *argv(small_sample, tmp_path, "busy", "--stopping_criterion", "nope,1"), check=False)
    one_error_line(proc, "error: --stopping_criterion: unknown metrics nope; this run computes")


def test_values_the_original_reads_as_off_are_off(tmp_path):
    """--clip_grad_norm, --save_periodic and --max_batch_size at or below 0 are off in the original: so here;
    --max_epoch 0 is no reason to refuse an evaluation."""
    params = parse_params(["--exp_name", "x", "--data_path", str(tmp_path), "--lgs", "en", "--mlm_steps", "en",
                           "--clip_grad_norm", "-1", "--save_periodic", "-1", "--max_batch_size", "-1"])
    assert (params.clip_grad_norm, params.save_periodic, params.max_batch_size) == (0, 0, 0)
    assert parse_params(["--exp_name", "x", "--data_path", str(tmp_path), "--lgs", "en", "--mlm_steps", "en",
                         "--eval_only", "true", "--max_epoch", "0"]).max_epoch == 0


def test_params_pkl_holds_the_latest_runs_flags(tmp_path):
    """As the original, every run (a resume too) rewrites params.pkl and params.json: they describe the run
    that wrote the folder's latest checkpoint, not the first one."""
    from xlm.train.distributed import DistInfo
    from xlm.train.experiment import prepare_dump, release_folders
    flags = ["--exp_name", "x", "--exp_id", "a", "--dump_path", str(tmp_path), "--data_path", str(tmp_path),
             "--lgs", "en", "--mlm_steps", "en"]
    try:
        for epochs in ("1", "3"):
            prepare_dump(parse_params([*flags, "--max_epoch", epochs]), DistInfo())
    finally:
        release_folders()
    with open(tmp_path / "x" / "a" / "params.pkl", "rb") as f:
        assert pickle.load(f).max_epoch == 3
    assert json.loads((tmp_path / "x" / "a" / "params.json").read_text())["max_epoch"] == 3


def test_a_resume_that_fails_in_its_set_up_says_why_in_its_log(small_sample, tmp_path, keep_signal_handlers):
    """The console has the error once; train.log, which a cluster's user reads first, ends with it too."""
    from xlm.train.loop import main
    main(argv(small_sample, tmp_path, "r"))
    proc = python("train.py", *argv(small_sample, tmp_path, "r", "--emb_dim", "48"), check=False)
    one_error_line(proc, "weights do not fit the model")
    assert proc.stderr.count("do not fit") == 1 and "do not fit" not in proc.stdout
    last = (tmp_path / "t" / "r" / "train.log").read_text().strip().splitlines()[-1]
    assert " - Stopped in the set-up by DataError: " in last and "weights do not fit the model" in last


def test_a_second_run_of_two_ranks_in_a_running_runs_folder_touches_nothing(small_sample, tmp_path):
    """Rank 0 holds the folder; its other ranks wrote their set-up into the running run's train.log-1, and in a
    race removed its folder: they now stop with rank 0, before writing anything."""
    from conftest import torchrun
    from xlm.train.experiment import hold_folder, release_folders
    folder = tmp_path / "t" / "busy"
    folder.mkdir(parents=True)
    (folder / "train.log-1").write_text("the first run's rank 1")
    hold_folder(str(folder))
    try:
        command, env = torchrun("train.py", *argv(small_sample, tmp_path, "busy"))
        proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    finally:
        release_folders()
    assert proc.returncode != 0 and proc.stderr.count("another run is using this experiment folder") == 2
    assert "RuntimeError" not in proc.stderr and "Connection closed" not in proc.stderr  # (torchrun's own traceback)
    assert sorted(os.listdir(folder)) == ["train.log-1"] and (folder / "train.log-1").read_text() == \
        "the first run's rank 1"


def test_unknown_metrics_name_their_flag_and_what_bleu_needs(tmp_path):
    from xlm.train.build import check_metrics
    from xlm.train.options import parse_params
    params = parse_params(["--exp_name", "x", "--data_path", str(tmp_path), "--lgs", "en-fr", "--encoder_only", "false",
                           "--mt_steps", "en-fr", "--stopping_criterion", "valid_en-fr_mt_bleu,3"])
    with pytest.raises(DataError, match=r"^--stopping_criterion: unknown metrics valid_en-fr_mt_bleu \(BLEU needs "
                                        r"--eval_bleu true\); this run computes valid_en-fr_mt_ppl"):
        check_metrics(params, None)


@contextmanager
def read_only(folder):
    """A folder nobody can write in: permission bits for a user, the immutable attribute for root."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
    elif subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("running as root on a file system without chattr +i: cannot make a read-only folder")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], capture_output=True) if os.geteuid() == 0 else folder.chmod(0o755)


def test_unwritable_experiment_folder_is_found_before_training(small_sample, tmp_path, keep_signal_handlers):
    (tmp_path / "file").write_text("not a folder")
    assert "--dump_path: cannot write the experiment" in setup_error(small_sample, tmp_path / "file" / "d", "a")
    exp = tmp_path / "ro" / "t" / "resumed"
    exp.mkdir(parents=True)
    with read_only(exp):
        assert f"--dump_path: cannot write the experiment folder {exp}" in setup_error(small_sample, tmp_path / "ro",
                                                                                       "resumed")


# ----------------------------------------------------------------------------- translate.py

WORDS = ["a", "b", "c", "d", "e", "f", "g", "h"]


@pytest.fixture(scope="module")
def mt_checkpoint(tmp_path_factory):
    """A random (untrained) translation model: its greedy outputs are deterministic, which is all we compare."""
    vocab = SPECIAL_WORDS + WORDS
    torch.manual_seed(0)
    kw = dict(n_words=len(vocab), emb_dim=16, n_layers=1, n_heads=2, n_langs=2)
    enc, dec = TransformerModel(TransformerConfig(**kw)), TransformerModel(TransformerConfig(**kw, is_decoder=True))
    params = dict(emb_dim=16, n_layers=1, n_heads=2, n_langs=2, lang2id={"en": 0, "fr": 1}, id2lang={0: "en", 1: "fr"},
                  encoder_only=False, n_words=len(vocab))
    path = tmp_path_factory.mktemp("mt") / "mt.pth"
    save_checkpoint(checkpoint_payload(Dictionary.from_words([(w, 0) for w in vocab]), params, encoder=enc.eval(),
                                       decoder=dec.eval()), path)
    return path


def translate_module():
    return load_script(ROOT / "translate.py", "translate_script")


def test_translate_under_torchrun_is_one_clear_line(mt_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(DataError, match="translate.py runs as one process"):
        translate_module().parse_args(["--model_path", str(mt_checkpoint), "--src_lang", "en", "--tgt_lang", "fr",
                                       "--output_path", str(tmp_path / "o")])


def test_translate_checks_its_output_folder_first(mt_checkpoint, tmp_path):
    proc = python("translate.py", "--model_path", mt_checkpoint, "--src_lang", "en", "--tgt_lang", "fr",
                  "--output_path", tmp_path / "missing" / "out.fr", input="a b\n", check=False)
    one_error_line(proc, f"--output_path {tmp_path / 'missing' / 'out.fr'}: cannot write in {tmp_path / 'missing'}")
    parse_args = translate_module().parse_args
    common = ["--model_path", str(mt_checkpoint), "--src_lang", "en", "--tgt_lang", "fr"]
    ro = tmp_path / "ro"
    ro.mkdir()
    with read_only(ro), pytest.raises(DataError, match="--output_path .*: cannot write in"):
        parse_args(common + ["--output_path", str(ro / "out.fr")])
    for flags, message in [(["--beam_size", "0"], "^--beam_size must be >= 1, got 0$"),
                           (["--batch_size", "0"], "^--batch_size must be >= 1, got 0$"),
                           (["--exp_name", "x", "--exp_id", "../y"], "--exp_id '../y'"),
                           (["--device", "nonsense"], "--device nonsense"),
                           (["--output_path", ""], "--output_path is empty")]:
        with pytest.raises(DataError, match=message.replace("(", r"\(")):
            parse_args(common + ["--output_path", str(tmp_path / "o")] + flags)


def test_translate_drops_special_tokens_as_preprocess_does(capsys):
    read_input = translate_module().read_input
    dico = Dictionary.from_words([(w, 0) for w in SPECIAL_WORDS + WORDS])
    got = read_input(io.BytesIO(b"a </s> b c\nd <pad> e <s>\nf <special3>\ng\n"), dico, 100)
    # preprocess.py's rule: every id below 14 but <unk> is removed, the other words keep their ids
    expected = [[dico.index(w) for w in line.split()] for line in ("a b c", "d e", "f", "g")]
    assert [t.tolist() for t in got] == expected
    assert capsys.readouterr().err == "warning: <stdin>: special tokens removed from 3 lines (first at line 1)\n"
    assert read_input(io.BytesIO(b"a <unk> b\n"), dico, 100)[0].tolist() == [dico.index("a"), 3, dico.index("b")]
    with pytest.raises(DataError, match="<stdin>:2: only special tokens"):
        read_input(io.BytesIO(b"a\n</s> <pad>\n"), dico, 100)


# ----------------------------------------------------------------------------- glue-xnli.py

def partial_copy(toy_tasks, tmp_path, removed):  # noqa: F811
    """The toy data with the files named in `removed` left out (the others linked)."""
    for src in (toy_tasks / "data").rglob("*"):
        if src.is_file() and src.name not in removed:
            dst = tmp_path / "data" / src.relative_to(toy_tasks / "data")
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.symlink_to(src)
    return tmp_path / "data"


def flags_on(toy_tasks, data):  # noqa: F811
    """glue-xnli.py's flags of the toy tasks, reading `data`."""
    flags = [str(a) for a in finetune_flags(toy_tasks, "missing")]
    flags[flags.index("--data_path") + 1] = str(data)
    return flags


def finetune(toy_tasks, data, *args):  # noqa: F811
    return python("glue-xnli.py", *flags_on(toy_tasks, data), "--n_epochs", 1, *args, check=False)


def test_glue_xnli_resumed_with_other_flags_goes_on(toy_tasks, tmp_path):  # noqa: F811
    """A fine-tuning rerun with other layers to tune, another optimizer or another --model_path resumes with
    a warning for what it cannot keep; a folder given as the model is named as one."""
    flags = [str(a) for a in finetune_flags(toy_tasks, "resumed")] + ["--epoch_size", "32"]
    flags[flags.index("--dump_path") + 1] = str(tmp_path / "dumped")
    python("glue-xnli.py", *flags, "--transfer_tasks", "SST-2", "--n_epochs", 1)
    copy = tmp_path / "copy.pth"
    copy.write_bytes((toy_tasks / "model.pth").read_bytes())
    flags[flags.index("--model_path") + 1] = str(copy)
    flags[flags.index("--optimizer_e") + 1] = "sgd,lr=0.1"
    proc = python("glue-xnli.py", *flags, "--transfer_tasks", "SST-2", "--n_epochs", 2, "--finetune_layers", "1:1")
    assert "the encoder optimizer state does not fit" in proc.stderr + proc.stdout
    assert f"goes on fine-tuning {toy_tasks / 'model.pth'}: the weights of --model_path {copy} are not used" in \
        proc.stderr + proc.stdout
    # the checkpoint still names the model its weights come from, so a third run says the same
    checkpoint = next((tmp_path / "dumped").rglob("checkpoint-SST-2.pth"))
    assert read_checkpoint(checkpoint)["finetune_params"]["model_path"] == str(toy_tasks / "model.pth")
    flags[flags.index("--model_path") + 1] = str(toy_tasks / "model.pth")
    proc = python("glue-xnli.py", *flags, "--transfer_tasks", "SST-2", "--n_epochs", 3, "--finetune_layers", "1:1")
    assert "goes on fine-tuning" not in proc.stderr + proc.stdout
    flags[flags.index("--model_path") + 1] = str(tmp_path)
    with pytest.raises(DataError) as raised:
        finetune_params([*flags, "--transfer_tasks", "SST-2"])
    assert str(raised.value) == f"--model_path: {tmp_path} is a folder, not a model checkpoint (.pth)"


def test_xnli_missing_test_files_are_an_error_before_training(toy_tasks, tmp_path):  # noqa: F811
    data = partial_copy(toy_tasks, tmp_path, {"test.s2.fr.pth", "test.label.fr"})
    proc = finetune(toy_tasks, data, "--transfer_tasks", "SST-2,XNLI")
    one_error_line(proc, "missing 2 data file(s)")
    assert "test.s2.fr.pth" in proc.stderr and "test.label.fr" in proc.stderr
    assert " - epoch " not in proc.stderr and not (toy_tasks / "dumped" / "ft" / "missing").exists()


def test_a_later_tasks_bad_label_is_named_before_the_first_trains(toy_tasks, tmp_path):  # noqa: F811
    """The labels of every task are read before the first trains: a bad one in the third task's files is
    not found after two tasks' epochs. The first case through the command, the others through the checks
    glue-xnli.py makes before its first task (`check_task_files`) in this process."""
    for n, (task, name, label, message) in enumerate([
            ("MRPC", "train.label", "2", "unknown label '2' (MRPC has 2 classes"),
            ("STS-B", "valid.label", "7", "STS-B labels are similarity scores from 0 to 5, got '7'"),
            ("XNLI", "test.label.fr", "maybe", "unknown label 'maybe'")]):
        data = partial_copy(toy_tasks, tmp_path / str(n), set())
        lines = (toy_tasks / "data" / "eval" / task / name).read_text().splitlines()
        (data / "eval" / task / name).unlink()  # a link to the shared file
        (data / "eval" / task / name).write_text("\n".join(lines[:-1] + [label]) + "\n")
        tasks = ["--transfer_tasks", f"SST-2,{'MRPC' if task != 'MRPC' else 'STS-B'},{task}"]
        if n == 0:  # (a run of the old code would have left checkpoints in --dump_path)
            proc = finetune(toy_tasks, data, *tasks, "--dump_path", tmp_path / "dumped")
            one_error_line(proc, f"{data / 'eval' / task / name}")
            assert message in proc.stderr.strip().splitlines()[-1] and " - epoch " not in proc.stderr
            continue
        with pytest.raises(DataError) as raised:
            check_task_files(finetune_params([*flags_on(toy_tasks, data), *tasks]))
        assert str(raised.value).startswith(str(data / "eval" / task / name)) and message in str(raised.value)


def test_a_training_set_lacking_a_class_trains_and_keeps_the_ids(toy_tasks, tmp_path):  # noqa: F811
    """An SST-2 train.label of one class (a sample of the set) trains, as in the original; the class keeps
    the id the other splits' labels give it ("1" is 1, where the original made it 0 in training). A task
    whose files hold fewer labels than its classes is warned of."""
    from xlm.data.binarized import load_binarized
    from xlm.evaluation.classification import TaskData
    data = partial_copy(toy_tasks, tmp_path, {"train.label"})
    n_train = len((toy_tasks / "data" / "eval" / "SST-2" / "train.label").read_text().splitlines())
    (data / "eval" / "SST-2" / "train.label").write_text("1\n" * n_train)
    dico = load_binarized(data / "eval" / "SST-2" / "train.s1.pth").dico
    train, label_set = TaskData(str(data), dico).split("SST-2", "train")
    assert label_set == ("0", "1") and set(train.labels.tolist()) == {1}
    proc = finetune(toy_tasks, data, "--transfer_tasks", "SST-2")
    assert proc.returncode == 0 and "valid_sst-2_acc" in proc.stderr and "label files hold" not in proc.stderr
    for split in ("valid", "test"):
        path = data / "eval" / "SST-2" / f"{split}.label"
        n_lines = len(path.read_text().splitlines())
        path.unlink()
        path.write_text("1\n" * n_lines)
    proc = finetune(toy_tasks, data, "--transfer_tasks", "SST-2")
    assert proc.returncode == 0 and "SST-2 has 2 classes; its label files hold 1 (1)" in proc.stderr


def test_glue_xnli_flags(toy_tasks, tmp_path):  # noqa: F811
    from xlm.train.finetune import parse_params as finetune_options
    for args, message in [(["--optimizer_e", "adam,lr=-1"], "--optimizer_e: lr=-1"),
                          (["--optimizer_p", "adam,beta2=2"], "--optimizer_p: Adam: invalid"),
                          (["--batch_size", "0"], "^--batch_size must be positive, got 0$"),
                          (["--n_epochs", "-1"], "^--n_epochs must be >= 0 .*, got -1$"),
                          (["--max_vocab", "3"], "--max_vocab 3"),
                          (["--tokens_per_batch", "0"], "--tokens_per_batch must be"),
                          (["--max_len", "0"], "--max_len must be >= 1"),
                          (["--min_count", "-1"], "--min_count must be >= 0"),
                          (["--log_interval", "0"], "--log_interval must be >= 1"),
                          (["--seed", "-1"], "--seed in"),
                          (["--dropout", "2"], "--dropout"),
                          (["--exp_id", "../up"], "--exp_id '../up'")]:
        with pytest.raises(DataError, match=message.replace("(", r"\(")):
            finetune_options([str(a) for a in finetune_flags(toy_tasks, "err")] + ["--transfer_tasks", "XNLI", *args])


def test_zero_epochs_set_up_and_stop(small_sample, toy_tasks, tmp_path):  # noqa: F811
    """--max_epoch 0 and --n_epochs 0 read the data and build the model, then stop, as in the original (a
    check of a set-up); a negative count is refused."""
    proc = python("train.py", *argv(small_sample, tmp_path / "dumped", "zero", "--max_epoch", 0))
    assert "Reached --max_epoch 0." in proc.stderr and "model: " in proc.stderr
    assert not list((tmp_path / "dumped").rglob("*.pth"))
    proc = python("glue-xnli.py", *finetune_flags(toy_tasks, "zero"), "--transfer_tasks", "SST-2", "--n_epochs", 0)
    assert "Traceback" not in proc.stderr and "starting epoch" not in proc.stderr


def test_nested_experiment_names_as_the_original(small_sample, tmp_path):
    """--exp_name sweep/lr1 and a nested --exp_id make their folders below --dump_path, as the original's
    `mkdir -p`; the same command resumes there."""
    flags = argv(small_sample, tmp_path / "dumped", "seed/1", "--exp_name", "sweep/lr1")  # one epoch
    python("train.py", *flags)
    run = tmp_path / "dumped" / "sweep" / "lr1" / "seed" / "1"
    assert (run / "train.log").is_file() and (run / "checkpoint.pth").is_file()
    assert f"Resumed from {run / 'checkpoint.pth'}: epoch 1" in python("train.py", *flags, "--max_epoch", 2).stderr


def test_a_bad_xlm_onednn_is_refused_with_the_flags(toy_tasks, mt_checkpoint, tmp_path, monkeypatch):  # noqa: F811
    """A wrong XLM_ONEDNN in the environment stops train.py, glue-xnli.py and translate.py where their flags
    are checked, not at the model's first linear layer."""
    from xlm.model.linear import onednn_chosen
    from xlm.train.finetune import parse_params as finetune_options
    monkeypatch.setenv("XLM_ONEDNN", "yes")
    checks = [(parse_params, ["--exp_name", "t", "--dump_path", str(tmp_path), "--data_path", str(tmp_path),
                              "--lgs", "en-fr", "--mlm_steps", "en", *TINY]),
              (finetune_options, [str(a) for a in finetune_flags(toy_tasks, "env")] + ["--transfer_tasks", "XNLI"]),
              (translate_module().parse_args, ["--model_path", str(mt_checkpoint), "--src_lang", "en", "--tgt_lang",
                                               "fr", "--output_path", str(tmp_path / "out.fr")])]
    try:
        for parse, args in checks:
            onednn_chosen.cache_clear()
            with pytest.raises(DataError, match="XLM_ONEDNN is 1 .* not 'yes'"):
                parse(args)
    finally:
        onednn_chosen.cache_clear()


@pytest.mark.parametrize("native", [True, False])
def test_bf16_on_a_gpu_without_it_is_warned_about(tmp_path, monkeypatch, native):
    """A GPU before Ampere has no bfloat16 arithmetic: torch emulates it, so the run goes on, with a
    warning in train.log that names the GPU and the faster choice."""
    from xlm.train import experiment
    from xlm.train.distributed import DistInfo
    monkeypatch.setattr(experiment, "init_distributed", lambda params: DistInfo(device=torch.device("cuda", 0)))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: native)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100-SXM2-32GB")
    params = parse_params(["--exp_name", "t", "--exp_id", "bf16", "--dump_path", str(tmp_path), "--data_path",
                           str(tmp_path), "--lgs", "en", "--mlm_steps", "en", "--bf16", "true", *TINY])
    experiment.start_experiment(params)
    log = (tmp_path / "t" / "bf16" / "train.log").read_text()
    warned = "--bf16 true: Tesla V100-SXM2-32GB has no bfloat16 arithmetic" in log and "--fp16 true" in log
    assert warned != native


@pytest.mark.parametrize("flag,fp16_native,bf16_native,expected", [
    ("fp16", False, True, "--fp16 true: this CPU has no float16 arithmetic; torch emulates it, many times slower "
                          "than float32: drop --fp16 (float32, the original's arithmetic on the CPU), or use --bf16"),
    ("fp16", False, False, "than float32: drop --fp16 (float32, the original's arithmetic on the CPU)\n"),
    ("fp16", True, True, None),
    ("bf16", False, False, "--bf16 true: this CPU has no bfloat16 arithmetic"),
    ("bf16", False, True, None)])
def test_half_precision_the_cpu_emulates_is_warned_about(tmp_path, monkeypatch, flag, fp16_native, bf16_native,
                                                         expected):
    """float16 on a CPU without it (most: AVX512-FP16 and AMX-FP16 are recent) ran train.py's MLM step 12x
    slower than float32 on a Zen 5, and a command copied from a GPU run has --fp16 true: the run goes on,
    with a warning in train.log that says so and names the faster choices."""
    from xlm.train import experiment
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_fp16_supported", lambda: fp16_native)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: bf16_native)
    params = parse_params(["--exp_name", "t", "--exp_id", flag, "--dump_path", str(tmp_path), "--data_path",
                           str(tmp_path), "--lgs", "en", "--mlm_steps", "en", f"--{flag}", "true", *TINY])
    experiment.start_experiment(params)
    log = (tmp_path / "t" / flag / "train.log").read_text()
    if expected is None:
        assert "arithmetic" not in log
    else:
        assert expected in log


def test_the_default_dump_path_names_the_user_as_the_original(monkeypatch):
    """getpass.getuser(), as the original: $USER unset (a container, cron) reads the password database."""
    import pwd

    from xlm.train.options import user_name
    for name in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        monkeypatch.delenv(name, raising=False)
    assert user_name() == pwd.getpwuid(os.getuid()).pw_name
    monkeypatch.setenv("USER", "alice")
    assert user_name() == "alice"


@pytest.mark.skipif(importlib.util.find_spec("resource") is None, reason="needs resource limits (POSIX)")
def test_a_model_too_large_for_memory_is_one_error(small_sample, tmp_path):
    """An allocation that fails (here a 400,000-wide embedding under a 6 GB address-space limit) is one line
    saying what to lower, not a traceback; no experiment folder is left."""
    import resource

    def limited():
        resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))
    proc = subprocess.run([sys.executable, "train.py", "--exp_name", "big", "--dump_path", str(tmp_path), "--data_path",
                           str(small_sample), "--lgs", "en", "--mlm_steps", "en", "--emb_dim", "400000",
                           "--n_heads", "8"], cwd=ROOT, capture_output=True, text=True, preexec_fn=limited,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120)
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert last.startswith("error: out of memory (") and last.endswith(
        "lower --batch_size, --tokens_per_batch or --bptt, or the model's size; the last checkpoint is kept")
    assert not (tmp_path / "big").exists()


def test_float_flags_refuse_nan_and_inf_but_a_norm_bound_of_inf():
    """nan or inf run on silently wrong (a nan --length_penalty, --dropout, an STS-B label); --clip_grad_norm
    inf is no clipping, which the original runs."""
    from xlm.train.options import finite_float, length_penalty, norm_bound
    assert finite_float("1e-3") == 0.001 and norm_bound("inf") == float("inf") and norm_bound("5") == 5.0
    for bad in ("nan", "inf", "-inf", "1e999", "x"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected a finite number"):
            finite_float(bad)
    with pytest.raises(argparse.ArgumentTypeError):
        norm_bound("nan")
    # beyond, n ** penalty overflowed at a long hypothesis (an OverflowError in beam search)
    assert length_penalty("50") == 50 and length_penalty("-0.6") == -0.6
    with pytest.raises(argparse.ArgumentTypeError, match="expected a number from -50 to 50, got '174'"):
        length_penalty("174")
