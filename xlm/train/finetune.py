"""glue-xnli.py: fine-tune a pretrained model on XNLI (zero-shot to the other languages) and GLUE.

For each task of --transfer_tasks, in turn: the pretrained model (freshly loaded) with a classifier
`Dropout -> Linear(dim, n_outputs)` on the sentence vector (last layer at position 0), trained with
two optimizers (--optimizer_e on the --finetune_layers parameters, --optimizer_p on the classifier)
and evaluated after every epoch. XNLI trains on one language (English) and is evaluated on every
language of the model that has data; GLUE feeds no language ids, as the original.
Each task keeps `best-<metric>.pth` (the fine-tuned model, loadable with `xlm.load_model`, plus its
classifier) and `checkpoint-<TASK>.pth`, from which a rerun of the same command resumes.
"""
import argparse
import functools
import json
import os
import sys
import time
from datetime import timedelta

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..cli import OriginalFlagsFirst
from ..data.iterators import BatchIterator
from ..evaluation.classification import TASKS, TaskData, predict, task_scores
from ..fileio import DataError, atomic_write
from ..host_memory import keep_freed_memory
from ..model.checkpoint import checkpoint_payload, load_model, load_weights, read_checkpoint, save_checkpoint
from ..model.embedder import finetuned_parameters, freeze_all_but, sentence_vectors
from ..model.linear import onednn_chosen, weights_packed
from ..progress import Progress
from .distributed import all_reduce_sum, broadcast_from_master, full_float32, shutdown, to_device
from .engine import StepEngine, amp_dtype
from .build import global_batching
from .checkpointing import differing_flags, gather_rank_states, load_optimizer_states, restore_rng_state, rng_state
from .experiment import failure_logged, release_folders, removed_on_failure, resume_command, start_experiment
from .options import bool_flag, finite_float, check_optimizer, check_sentence_batching, set_experiment_names
from .schedules import build_optimizer
from .signals import EvaluationStopped, StopSignals

# what a resumed fine-tuning may change, but rarely means to (train.py's BATCHING_FLAGS)
# (not --seed: a run resumed with another is refused, its data order having been drawn with its own)
FINETUNE_BATCHING_FLAGS = ("batch_size", "max_batch_size", "tokens_per_batch", "max_len", "group_by_size",
                           "optimizer_e", "optimizer_p", "finetune_layers", "dropout", "epoch_size", "fp16", "bf16")


# glue-xnli.py's flags that the original lacks: an abbreviation still means the original's flag it starts
OWN_FLAGS = ("--xnli_train_lang", "--embedder_only", "--seed", "--log_interval", "--fp16", "--bf16", "--local_rank",
             "--local-rank", "--master_port")


def build_parser():
    p = OriginalFlagsFirst(description="Fine-tune a pretrained XLM on XNLI / GLUE",
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter, own_flags=OWN_FLAGS)
    a = p.add_argument
    a("--exp_name", type=str, default="", help="experiment name (required)")
    a("--dump_path", type=str, default="", help="experiments go to DUMP_PATH/EXP_NAME/EXP_ID/")
    a("--exp_id", type=str, default="", help="run id (empty: $SLURM_JOB_ID, or a random one)")
    a("--transfer_tasks", type=str, default="", help=f"comma list of {', '.join(TASKS)}")
    a("--model_path", type=str, default="", help="pretrained model .pth")
    a("--data_path", type=str, default="", help="folder with eval/XNLI/ and/or eval/<GLUE task>/")
    a("--max_vocab", type=int, default=-1, help="keep the N first words of the vocabulary (-1: all)")
    a("--min_count", type=int, default=0, help="drop the words seen fewer than N times")
    a("--max_len", type=int, default=256, help="training sentences are cut to this many tokens")
    a("--group_by_size", type=bool_flag, default=False, help="batch examples of similar lengths together")
    a("--batch_size", type=int, default=32, help="examples per batch and process")
    a("--max_batch_size", type=int, default=0, help="with --tokens_per_batch: at most N examples a batch (0: no limit)")
    a("--tokens_per_batch", type=int, default=-1, help="batches of about N tokens instead of --batch_size examples "
      "(-1: off)")
    a("--finetune_layers", type=str, default="0:_1",
      help="'i:j': 0 the embeddings, k the k-th layer, _ a minus sign (0:_1 = everything)")
    a("--embedder_only", type=bool_flag, default=False,
      help="freeze the whole pretrained model and train the classifier only (xlm; = --finetune_layers 1:0)")
    a("--weighted_training", type=bool_flag, default=False, help="class-weighted loss (GLUE)")
    a("--dropout", type=finite_float, default=0, help="dropout before the classifier")
    a("--optimizer_e", type=str, default="adam,lr=0.0001", help="optimizer of the pretrained model's parameters")
    a("--optimizer_p", type=str, default="adam,lr=0.0001", help="optimizer of the classifier")
    a("--n_epochs", type=int, default=100, help="epochs to train")
    a("--epoch_size", type=int, default=-1, help="training sentences per epoch, at most one pass (-1: one pass)")
    a("--xnli_train_lang", type=str, default="en", help="the language XNLI is trained on (xlm)")
    a("--seed", type=int, default=0, help="random seed (xlm)")
    a("--log_interval", type=int, default=20, help="steps between progress lines (xlm)")
    a("--fp16", type=bool_flag, default=False, help="float16 autocast with loss scaling (xlm)")
    a("--bf16", type=bool_flag, default=False, help="bfloat16 autocast (xlm)")
    a("--debug_train", type=bool_flag, default=False, help="train on the valid files (fast loading)")
    a("--debug_slurm", type=bool_flag, default=False, help="inside a SLURM job, ignore its tasks")
    a("--local_rank", "--local-rank", type=int, default=-1,  # the latter from torch.distributed.launch
      help="set by torch.distributed.launch")
    a("--master_port", type=int, default=-1, help="srun jobs of several tasks: rank 0's port, in 10001..20000")
    return p


def parse_params(argv=None):
    params = build_parser().parse_args(argv)
    params.command = " ".join(["python", "glue-xnli.py"] + list(argv if argv is not None else sys.argv[1:]))
    set_experiment_names(params)
    params.transfer_tasks = params.transfer_tasks.split(",") if params.transfer_tasks else []
    if not params.transfer_tasks:
        raise DataError(f"--transfer_tasks is required: a comma list of {', '.join(TASKS)}")
    if "" in params.transfer_tasks:  # the original asserts
        raise DataError(f"--transfer_tasks '{','.join(params.transfer_tasks)}': an empty task name")
    for task in params.transfer_tasks:
        if task not in TASKS:
            raise DataError(f"--transfer_tasks: unknown task '{task}' (one of {', '.join(TASKS)})")
    if len(set(params.transfer_tasks)) != len(params.transfer_tasks):
        raise DataError("--transfer_tasks: a task appears twice")
    for flag in ("model_path", "data_path"):
        if not getattr(params, flag):
            raise DataError(f"--{flag} is required")
    if os.path.isdir(params.model_path):
        raise DataError(f"--model_path: {params.model_path} is a folder, not a model checkpoint (.pth)")
    if not os.path.isfile(params.model_path):
        raise DataError(f"--model_path: {params.model_path} does not exist")
    if not os.path.isdir(params.data_path):
        raise DataError(f"--data_path: {params.data_path} is not a folder")
    for flag in ("optimizer_e", "optimizer_p"):
        check_optimizer(getattr(params, flag), flag)
    if params.fp16 and params.bf16:
        raise DataError("--fp16 and --bf16 exclude each other")
    if params.batch_size < 1:
        raise DataError(f"--batch_size must be positive, got {params.batch_size}")
    if params.n_epochs < 0:
        raise DataError(f"--n_epochs must be >= 0 (0: set up and stop, as the original), got {params.n_epochs}")
    if params.epoch_size == 0 or params.epoch_size < -1:
        raise DataError("--epoch_size must be positive, or -1 for one pass over the training set")
    if params.log_interval < 1:
        raise DataError("--log_interval must be >= 1")
    check_sentence_batching(params)
    if params.max_len < 1:  # the length sentences are cut to (the original's cut fails on 0)
        raise DataError("--max_len must be >= 1")
    if not 0 <= params.dropout < 1 or not 0 <= params.seed < 2 ** 32:
        raise DataError("--dropout must be in [0, 1) and --seed in [0, 2**32)")
    if params.tokens_per_batch > -1:
        params.group_by_size = True
    if params.embedder_only:
        params.finetune_layers = "1:0"
    onednn_chosen()  # a bad XLM_ONEDNN in the environment stops the run here, not at its first layer
    return params


class Classifier(nn.Module):
    """The pretrained encoder and the original's head: the sentence vector -> Dropout -> Linear."""

    def __init__(self, encoder, n_outputs, dropout):
        super().__init__()
        self.encoder = encoder
        self.proj = nn.Sequential(nn.Dropout(dropout), nn.Linear(encoder.config.emb_dim, n_outputs))

    def forward(self, x, lengths, langs):
        return self.proj(sentence_vectors(self.encoder, x, lengths, langs))


class FineTuner:
    """One task: the model, its data, optimizers, the epoch loop, evaluation and saves."""

    def __init__(self, params, task, info, logger, metrics, signals):
        self.params, self.task_name, self.task = params, task, TASKS[task]
        self.info, self.logger, self.metrics = info, logger, metrics
        # each task of --transfer_tasks its own draws (tasks of one training set, MNLI-m and MNLI-mm, were the
        # same fine-tuning), as the original's random state went on from task to task; the first keeps --seed
        self.seed = params.seed + 10007 * params.transfer_tasks.index(task)
        torch.manual_seed(self.seed)  # the same classifier initialisation on every rank
        loaded = load_model(params.model_path)
        self.pretrained_params, self.dico = loaded.params, loaded.dico
        self.model_path = params.model_path  # where the weights come from (resumed: the checkpoint's model)
        self.lang2id = dict(loaded.params.get("lang2id") or {})
        encoder = loaded.encoder
        if loaded.decoder is not None:
            logger.info("%s: a translation model; fine-tuning its encoder", params.model_path)
        if loaded.classifier is not None:
            logger.info("%s: a model fine-tuned on %s; fine-tuning its encoder with a new classifier for %s",
                        params.model_path, loaded.task, task)
        for memory in encoder.memories.values():
            # a model pretrained with --mem_sparse true: its memory values' gradients dense, for the Adam of
            # --optimizer_e (the original's fine-tuning fails there)
            memory.values.sparse = False
        tuned = finetuned_parameters(encoder, params.finetune_layers)
        if task != "XNLI" and encoder.config.has_lang_emb:
            # GLUE feeds no language ids: frozen, the language embeddings cannot hold up distributed
            # training, which waits for a gradient of every trainable parameter
            tuned = [p for p in tuned if p is not encoder.lang_embeddings.weight]
        freeze_all_but(encoder, tuned)
        self.model = Classifier(encoder, self.task.n_outputs, params.dropout).to(info.device)
        torch.manual_seed(self.seed + info.rank)  # dropout differs between ranks
        logger.info("%s: fine-tuning %i of %i pretrained parameters (--finetune_layers %s)", task,
                    sum(p.numel() for p in tuned), sum(p.numel() for p in encoder.parameters()),
                    params.finetune_layers)
        self.optimizers = {"classifier": build_optimizer(self.model.proj.parameters(), params.optimizer_p)}
        if tuned:
            self.optimizers["encoder"] = build_optimizer(tuned, params.optimizer_e)
        self.load_data()
        device_ids = [info.device] if info.device.type == "cuda" else None
        self.ddp = (DistributedDataParallel(self.model, device_ids=device_ids, gradient_as_bucket_view=True)
                    if info.multi else self.model)  # gradient_as_bucket_view: see loop.py
        self.engine = StepEngine(self.optimizers, {}, [self.ddp], info.device, amp_dtype(params), multi=info.multi)
        # on the CPU, each step's large tensors reuse the pages the last step freed (see host_memory.py)
        self.freed_memory = keep_freed_memory() if info.device.type == "cpu" else None
        self.epoch, self.best = 0, None
        self.signals = signals
        # the epoch's sentences and steps trained, for a checkpoint saved in the middle of the epoch or before
        # its evaluation (0, 0 once it is evaluated)
        self.done_sentences, self.done_steps = 0, 0
        self.checkpoint_path = os.path.join(params.dump_path, f"checkpoint-{task}.pth")
        self.resume()

    # ------------------------------------------------------------------ data
    def load_data(self):
        p, task = self.params, self.task_name
        data = TaskData(p.data_path, self.dico, p.max_vocab, p.min_count)
        if task == "XNLI":
            if p.xnli_train_lang not in self.lang2id:
                raise DataError(f"--xnli_train_lang {p.xnli_train_lang}: not a language of the model "
                                f"({', '.join(self.lang2id) or 'none'})")
            self.train_lang = p.xnli_train_lang
            self.eval_langs = [lg for lg in self.lang2id if data.has_split(task, "valid", lg)]
            if self.train_lang not in self.eval_langs:
                raise DataError(f"missing {p.data_path}/eval/XNLI/valid.s1.{self.train_lang}.pth: the valid set of "
                                "the training language selects the model")
            skipped = [lg for lg in self.lang2id if lg not in self.eval_langs]
            if skipped:
                self.logger.info("XNLI: no valid data for %s in %s: not evaluated", ", ".join(skipped), p.data_path)
        else:
            self.train_lang, self.eval_langs = None, [None]
        batching = global_batching(p, self.info.world_size)
        self.train, self.label_set = data.split(task, "train", self.train_lang, batching,
                                                file_split="valid" if p.debug_train else None)
        if self.train.labels is None:
            raise DataError(f"{self.train.path}: the training set has no labels")
        if self.label_set is not None and len(self.label_set) < self.task.n_outputs:
            self.logger.warning("%s has %i classes; its label files hold %i (%s), numbered in sorted order", task,
                                self.task.n_outputs, len(self.label_set), ", ".join(self.label_set))
        self.eval_splits = {}
        for split in ("valid", "test"):
            for lang in self.eval_langs:
                if split == "valid" or data.has_split(task, split, lang):
                    self.eval_splits[(split, lang)] = data.split(task, split, lang, label_set=self.label_set)[0]
        n_positions = self.model.encoder.config.n_positions
        self.train.check_fits(n_positions, p.max_len)
        for split in self.eval_splits.values():
            split.check_fits(n_positions)
        self.iterator = BatchIterator(self.train.dataset, self.seed, self.info.rank, self.info.world_size)
        self.class_weights = None
        if p.weighted_training and (self.task.n_outputs == 1 or task == "XNLI"):  # as the original
            why = "a regression" if self.task.n_outputs == 1 else "the original weights GLUE's tasks alone"
            self.logger.warning("--weighted_training: %s is trained unweighted (%s)", task, why)
        if p.weighted_training and self.task.n_outputs > 1 and task != "XNLI":
            counts = np.bincount(self.train.labels, minlength=self.task.n_outputs).astype(np.float64)
            weights = 1.0 / np.maximum(counts, 1)
            self.class_weights = torch.tensor(weights / weights.sum(), dtype=torch.float32, device=self.info.device)
        self.logger.info("%s: %i training examples%s; evaluated on %s", task, len(self.train.dataset),
                         f" ({self.train_lang})" if self.train_lang else "",
                         ", ".join(f"{s} {lg}" if lg else s for s, lg in self.eval_splits))

    def lang_id(self, lang):
        return self.lang2id[lang] if lang is not None else None

    # ------------------------------------------------------------------ training
    def loss(self, outputs, labels):
        if self.task.n_outputs == 1:
            return F.mse_loss(outputs[:, 0].float(), labels.float())
        return F.cross_entropy(outputs.float(), labels, weight=self.class_weights)

    def train_epoch(self):
        """Trains to the epoch's end, or to the first progress line (one process: the end of the step) or the
        epoch's end after a signal (returns True: stopped, a checkpoint saved there)."""
        p, device = self.params, self.info.device
        self.model.train()
        n_sentences, n_steps = self.done_sentences, self.done_steps
        if not n_sentences:  # not resumed within this epoch
            self.iterator.start_pass()
        # as the original: --epoch_size sentences, or the end of the pass if it comes first (-1: one pass)
        end_of_pass = n_sentences + self.iterator.rows_left_in_pass()
        epoch_size = min(p.epoch_size, end_of_pass) if p.epoch_size > 0 else end_of_pass
        resumed_sentences = n_sentences  # the ETA counts from here
        # loss and correct predictions summed on the device, read at log lines; steps, examples, rows
        sums, window = torch.zeros(2, dtype=torch.float64, device=device), [0, 0, 0]
        start = last_log = time.time()
        while n_sentences < epoch_size:
            key = self.iterator.next_global_key()
            shard = self.train.dataset.shard(key, self.info.rank, self.info.world_size)
            x, lengths, langs, indices = self.train.batch(shard, self.lang_id(self.train_lang), p.max_len)
            labels = torch.from_numpy(self.train.labels[indices]).to(device, non_blocking=True)
            outputs = []

            def loss():
                outputs.append(self.ddp(*(to_device(t, device) for t in (x, lengths, langs))))
                return self.loss(outputs[0], labels)
            sums[0] += self.engine.step(loss)
            n_steps += 1
            n_sentences += len(key)
            window[0] += 1
            window[2] += len(key)
            if self.task.n_outputs > 1:
                sums[1] += (outputs[0].argmax(1) == labels).sum()
                window[1] += len(labels)
            at_progress_line = n_steps % p.log_interval == 0
            if at_progress_line:
                self.engine.settle()
                loss_sum, correct = sums.tolist()
                loss_sum, steps, correct, examples = all_reduce_sum([loss_sum, window[0], correct, window[1]],
                                                                    self.info)
                eta = (time.time() - start) / (n_sentences - resumed_sentences) * max(epoch_size - n_sentences, 0)
                acc = f" - train acc {100 * correct / max(examples, 1):5.1f}" if self.task.n_outputs > 1 else ""
                self.logger.info("%s - epoch %i - %i/%i sentences - %.1f sent/s - loss %.4f%s - ETA epoch %s",
                                 self.task_name, self.epoch, n_sentences, epoch_size,
                                 window[2] / max(time.time() - last_log, 1e-9), loss_sum / max(steps, 1), acc,
                                 timedelta(seconds=round(eta)))
                self.metrics.write(f"train_{self.task_name}", self.epoch, {"loss": loss_sum / max(steps, 1)})
                sums.zero_()
                window, last_log = [0, 0, 0], time.time()
                if self.freed_memory:
                    self.freed_memory.check()
            # ranks agree on a signal at progress lines (a collective); one process stops after any step
            if (at_progress_line or not self.info.multi) and self.stopped_by_signal(n_sentences, n_steps):
                return True
        # a signal since the last progress line stops here, before the evaluation (the rerun evaluates)
        if self.stopped_by_signal(n_sentences, n_steps):
            return True
        self.done_sentences, self.done_steps = n_sentences, n_steps  # what a stop in the evaluation saves
        return False

    def stopped_by_signal(self, n_sentences, n_steps):
        """At progress lines (one process: after every step) and the epoch's end: every rank saves, where the
        epoch stands included, and stops if one of them was signalled."""
        if not self.signals.agreed(self.info):
            return False
        self.done_sentences, self.done_steps = n_sentences, n_steps
        self.save_checkpoint()
        self.signals.stop(self.info)
        return True

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self):
        """Scores of every valid/test set: each rank predicts its share, rank 0 scores them all, writes
        the predictions and sends every rank the scores."""
        self.model.eval()
        scores = {"epoch": self.epoch}
        # XNLI's 30 sets take minutes at the paper's size: rank 0 shows how far it is
        with Progress(f"{self.task_name} evaluation" if self.info.is_master else None, len(self.eval_splits),
                      unit="sets") as progress:
            for (split, lang), data in self.eval_splits.items():
                with full_float32(), weights_packed():  # on the CPU, reordered for oneDNN once per set
                    # a signal that any rank received stops the evaluation at its next batch
                    outputs = predict(self.model, data, self.lang_id(lang), self.info, self.engine.autocast(),
                                      functools.partial(self.signals.check_evaluation, self.info))
                progress.update(1)
                if not self.info.is_master:
                    continue
                if self.task_name != "XNLI":
                    self.write_predictions(split, outputs)
                if data.labels is not None:
                    # the original names GLUE scores after the task in lower case: valid_sst-2_acc
                    prefix = f"xnli_{split}_{lang}" if self.task_name == "XNLI" else f"{split}_{self.task_name.lower()}"
                    scores.update(task_scores(self.task_name, outputs, data.labels, prefix))
        if self.task_name == "XNLI":
            for split in ("valid", "test"):
                accs = [v for k, v in scores.items() if k.startswith(f"xnli_{split}_") and k.endswith("_acc")]
                if accs:
                    scores[f"xnli_{split}_acc"] = float(np.mean(accs))
        return broadcast_from_master(scores, self.info)

    def write_predictions(self, split, outputs):
        folder = os.path.join(self.params.dump_path, self.task_name)
        os.makedirs(folder, exist_ok=True)
        with atomic_write(os.path.join(folder, f"{split}.pred.{self.epoch}"), "w") as f:
            for i, row in enumerate(outputs):  # float32 values as numpy prints them, as the original
                f.write(f"{i}\t{','.join(str(v) for v in row)}\n")

    @property
    def validation_metric(self):
        """The score that selects the best model: for XNLI the valid accuracy in the training language,
        so that no label of another language is used (zero-shot), else the task's first metric."""
        if self.task_name == "XNLI":
            return f"xnli_valid_{self.train_lang}_acc"
        return f"valid_{self.task_name.lower()}_{self.task.metrics[0]}"

    # ------------------------------------------------------------------ saving, resuming
    def payload(self, **extra):
        return checkpoint_payload(self.dico, self.pretrained_params, model=self.model.encoder,
                                  classifier=self.model.proj.state_dict(), task=self.task_name,
                                  finetune_params={**{k: v for k, v in vars(self.params).items()
                                                      if isinstance(v, (str, int, float, bool, list))},
                                                   "model_path": self.model_path}, **extra)

    def save_best(self, scores):
        metric = self.validation_metric
        if self.best is not None and scores[metric] <= self.best:
            return
        self.best = scores[metric]
        self.logger.info("New best score for %s: %.2f", metric, self.best)
        if self.info.is_master:
            save_checkpoint(self.payload(epoch=self.epoch, scores=scores),
                            os.path.join(self.params.dump_path, f"best-{metric}.pth"))
            self.logger.info("Saved best-%s.pth", metric)

    def save_checkpoint(self):
        """Rank 0 writes it; every rank takes part, as random states are gathered."""
        rng = gather_rank_states(rng_state(self.info.device), self.info)
        if not self.info.is_master:
            return
        optimizers = {f"{name}_optimizer": o.state_dict() for name, o in self.optimizers.items()}
        state = {"epoch": self.epoch, "best": self.best, "iterator": self.iterator.state_dict(),
                 "scaler": self.engine.scaler.state_dict(), "rng": rng,
                 "done_sentences": self.done_sentences, "done_steps": self.done_steps}
        save_checkpoint(self.payload(train_state=state, **optimizers), self.checkpoint_path)

    def resume(self):
        if not os.path.isfile(self.checkpoint_path):
            return
        data = read_checkpoint(self.checkpoint_path)
        missing = [key for key in ("model", "classifier", "train_state") if key not in data]
        if missing:
            raise DataError(f"{self.checkpoint_path}: not a checkpoint of glue-xnli.py (no {', '.join(missing)}); "
                            "move it away to fine-tune this task afresh")
        load_weights(self.model.encoder, data["model"], f"{self.checkpoint_path} (model)")
        load_weights(self.model.proj, data["classifier"], f"{self.checkpoint_path} (classifier)")
        load_optimizer_states(self.optimizers, data, self.checkpoint_path, self.logger)
        saved_params = data.get("finetune_params", {})
        changed = differing_flags(self.params, saved_params, FINETUNE_BATCHING_FLAGS)
        if changed:  # as train.py warns
            self.logger.warning("%s: resumed with other flags than the run's (%s): it goes on with this command's",
                                self.checkpoint_path, "; ".join(changed))
        saved_model = saved_params.get("model_path")
        if saved_model and os.path.realpath(saved_model) != os.path.realpath(self.params.model_path):
            self.logger.warning("%s goes on fine-tuning %s: the weights of --model_path %s are not used",
                                self.checkpoint_path, saved_model, self.params.model_path)
            self.model_path = saved_model
        state = data["train_state"]
        self.epoch, self.best = state["epoch"], state["best"]
        self.done_sentences, self.done_steps = state.get("done_sentences", 0), state.get("done_steps", 0)
        try:
            self.iterator.load_state_dict(state["iterator"])
        except DataError as e:
            raise DataError(f"{self.checkpoint_path}: {e}") from None
        self.engine.load_scaler_state(state["scaler"])
        if "torch_rng" in state:  # a checkpoint of an earlier version: rank 0's CPU state alone
            torch.set_rng_state(state["torch_rng"])
        else:  # dropout goes on as it would have
            restore_rng_state(state["rng"], self.info, self.logger)
        self.logger.info("%s: resumed from %s at epoch %i%s", self.task_name, self.checkpoint_path, self.epoch,
                         f", sentence {self.done_sentences}" if self.done_sentences else "")

    def log_lines(self, scores):
        """The original's `__log__` lines of an epoch: for XNLI one, for GLUE one for each split with labels
        (valid, and test for MRPC), which log readers of the original's runs count on."""
        if self.task_name == "XNLI":
            return [scores]
        splits = [{k: v for k, v in scores.items() if k.startswith(f"{split}_")} for split in ("valid", "test")]
        return [{"epoch": scores["epoch"], **split} for split in splits if split]

    def run(self):
        """The task's epochs, or up to where a signal stops them (`signals.stopped`)."""
        if 0 < self.params.n_epochs <= self.epoch:  # resumed: the original would fine-tune again
            self.logger.warning("%s: %s has %i epoch(s) done, --n_epochs %i: nothing to train (another --exp_id "
                                "fine-tunes anew)", self.task_name, self.checkpoint_path, self.epoch,
                                self.params.n_epochs)
        while self.epoch < self.params.n_epochs:
            self.logger.info("============ %s: starting epoch %i ... ============", self.task_name, self.epoch)
            if self.train_epoch():
                return
            try:
                scores = self.evaluate()
            except EvaluationStopped:  # saved as before the evaluation, which the rerun does
                self.save_checkpoint()
                self.signals.stop(self.info)
                return
            self.done_sentences, self.done_steps = 0, 0
            for k, v in scores.items():
                self.logger.info("%s -> %.6f", k, v)
            if self.info.is_master:
                for line in self.log_lines(scores):
                    self.logger.info("__log__:%s", json.dumps(line))
            self.metrics.write(f"eval_{self.task_name}", self.epoch, scores)
            self.save_best(scores)
            self.epoch += 1
            self.save_checkpoint()
        if self.best is not None:  # None after --n_epochs 0
            self.logger.info("%s: done, best %s %.2f", self.task_name, self.validation_metric, self.best)


def check_task_files(params):
    """Every file the tasks will read, before the first of them trains: XNLI's training language, and
    each language with any XNLI file must have all of them, or the mean accuracy would silently leave it
    out. A language of the model without any XNLI file (e.g. one XNLI does not cover) is not evaluated.
    The model file is read first: an unreadable one is the first error. The labels of the tasks after
    the first are read too (the first's are read as it starts)."""
    model_langs = (read_checkpoint(params.model_path).get("params") or {}).get("lang2id") or {}
    data = TaskData(params.data_path, None)
    missing, languages = [], {}  # task -> the languages of its files (None: GLUE's, without one)
    for task in params.transfer_tasks:
        if task != "XNLI":
            missing += data.missing_files(task, "valid" if params.debug_train else "train") + \
                data.missing_files(task, "valid")
            languages[task] = [None]
            continue
        if params.xnli_train_lang not in model_langs:
            raise DataError(f"--xnli_train_lang {params.xnli_train_lang}: not a language of the model "
                            f"({', '.join(model_langs) or 'none'})")
        folder = os.path.join(params.data_path, "eval", "XNLI")
        present = {name.split(".")[2] for name in (os.listdir(folder) if os.path.isdir(folder) else [])
                   if name.count(".") >= 2}
        missing += data.missing_files(task, "valid" if params.debug_train else "train", params.xnli_train_lang)
        languages[task] = sorted(set(model_langs) & (present | {params.xnli_train_lang}))
        for lang in languages[task]:
            missing += data.missing_files(task, "valid", lang) + data.missing_files(task, "test", lang)
    if missing:
        raise DataError(f"missing {len(missing)} data file(s): {', '.join(missing[:6])}"
                        f"{', ...' if len(missing) > 6 else ''}")
    for task in params.transfer_tasks[1:]:
        for lang in languages[task]:
            trains = (lang is None or lang == params.xnli_train_lang) and not params.debug_train
            data.check_labels(task, lang, ("train", "valid", "test") if trains else ("valid", "test"))


def main(argv=None):
    params = parse_params(argv)
    check_task_files(params)
    try:
        with removed_on_failure(params):
            info, logger, metrics = start_experiment(params)
            # from here on kept for the next save point
            signals = StopSignals(logger, alone=not info.multi, rerun=resume_command(params))
            tuner = FineTuner(params, params.transfer_tasks[0], info, logger, metrics, signals)
        with failure_logged(logger, params):
            tuner.run()
            for task in params.transfer_tasks[1:]:
                if signals.stopped:  # the next task is not started
                    break
                FineTuner(params, task, info, logger, metrics, signals).run()
        shutdown(info)
    finally:
        release_folders()
    if signals.exit_status is not None:
        sys.exit(signals.exit_status)  # the shell's status of a signalled command: the run is not over
