"""The training loop of train.py, read top to bottom: resume, epochs of rounds of objective steps,
evaluation, checkpoints. Its components are made in xlm/train/build.py; what to train on comes ready from
xlm/train/pipeline.py (a background thread), a step is xlm/train/engine.py's, objectives are functions of a
batch (xlm/objectives); the model knows nothing of this file.
"""
import functools
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import timedelta

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from ..data.datasets import Batch
from ..data.loader import load_training_data
from ..evaluation.lm import evaluate_lm, model_name, stream_means
from ..evaluation.mt import check_evaluated_pairs, evaluate_mt, write_references
from ..fileio import DataError
from ..model.checkpoint import checkpoint_payload, save_checkpoint
from ..model.generate import generate_greedy
from ..model.linear import free_roundings, weights_packed
from ..objectives.lm import MaskingConfig
from ..objectives.mt import mt_loss
from ..objectives.pc import pc_loss
from .build import build_iterators, build_models, build_optimizers, check_backend, check_metrics
from .checkpointing import (gather_rank_states, load_training_checkpoint, restore_rng_state, rng_state,
                            save_training_checkpoint, saved_positions)
from .compile import BucketPadded
from .distributed import all_reduce_sum, broadcast_from_master, full_float32, shutdown
from .engine import StepEngine, amp_dtype
from .experiment import (failure_logged, release_folders, removed_on_failure, resume_command, seed_all,
                         start_experiment)
from ..host_memory import keep_freed_memory
from .options import parse_params
from .pipeline import Plan, Prefetcher, step_names, training_sizes
from .schedules import LambdaSchedule
from .signals import EvaluationStopped, StopSignals


LOSS_ORDER = ("CLM", "MLM", "PC", "AE", "MT", "BT")


def original_order(name, langs):
    """Sort key of a loss on the progress line, in the original's order: CLM, MLM, PC, AE, MT and BT in turn,
    each a language's before a pair's, in the order of --lgs."""
    kind, *names = name.split("-")
    return (LOSS_ORDER.index(kind) if kind in LOSS_ORDER else len(LOSS_ORDER), len(names),
            [langs.index(lg) if lg in langs else len(langs) for lg in names], name)


@dataclass
class LoopState:
    epoch: int = 0
    n_total_iter: int = 0
    n_steps: int = 0            # backward passes, for gradient accumulation
    n_sentences: int = 0        # this epoch, + batch_size per step as the original counts
    best_metrics: dict = field(default_factory=dict)
    best_stopping_criterion: float = None
    decrease_counts: int = 0
    stopping_metric: str = ""   # --stopping_criterion's metric, whose best and count those two are
    n_nonfinite: int = 0        # updates skipped for a non-finite loss
    losses: dict = field(default_factory=dict)   # key -> [sum, count] since the last progress line
    n_words: int = 0            # predicted tokens since the last progress line
    n_sents: int = 0


class Trainer:
    def __init__(self, params):
        self.params = params
        info, self.logger, self.metrics = start_experiment(params)
        self.info = info
        check_backend(params, info)
        # on the CPU, each step's large tensors reuse the pages the last step freed (see host_memory.py)
        self.freed_memory = keep_freed_memory() if info.device.type == "cpu" else None
        # from here on a signal (SLURM's time-limit warning, a kill, Ctrl-C) is kept until the run can stop (signals.py)
        self.signals = StopSignals(self.logger, alone=not info.multi, rerun=resume_command(params),
                                   saves=not params.eval_only)
        self.dump = params.dump_path
        seed_all(params.seed)  # the same initial weights on every rank
        self.data = load_training_data(params, self.logger, info.local_rank if info.multi else None)
        check_metrics(params, self.logger)
        params.n_words = self.data.n_words
        if info.is_master:
            write_references(self.data, params, self.dump)
        self.models = build_models(params, self.data.dico, info.device, self.logger)
        check_evaluated_pairs(self.data, params)
        self.optimizers, param_sets = build_optimizers(self.models, params)
        device_ids = [info.device] if info.device.type == "cuda" else None
        # steps that leave parameters out: PC the output layer, a decoder's CLM its cross-attention, and a
        # batch without a target in some cluster of the adaptive softmax that cluster
        partial = bool(params.pc_steps) or not params.encoder_only and bool(params.clm_steps or params.mlm_steps)
        trained = {k: BucketPadded(m) if params.compile else m for k, m in self.models.items()}
        # gradients as views of DDP's all-reduce buckets: no copy of every gradient in and out of them at each
        # update, nor the memory of a second copy (1 GB for the 12 x 1024 model in float32)
        self.ddp = {k: DistributedDataParallel(trained[k], device_ids=device_ids, gradient_as_bucket_view=True,
                                               find_unused_parameters=partial or m.config.asm)
                    if info.multi else trained[k] for k, m in self.models.items()}
        self.engine = StepEngine(self.optimizers, param_sets, self.ddp.values(), info.device, amp_dtype(params),
                                 params.accumulate_gradients, params.clip_grad_norm, info.multi)
        self.lambdas = {o: LambdaSchedule.parse(getattr(params, f"lambda_{o}"))
                        for o in ("clm", "mlm", "pc", "ae", "mt", "bt")}
        self.iterators = build_iterators(params, self.data, info, self.logger) if not params.eval_only else {}
        sizes = {} if params.eval_only else training_sizes(params, self.data, self.iterators)
        masking = MaskingConfig.from_params(params, self.data.dico, self.data.n_words)
        self.masking_generator = torch.Generator().manual_seed(params.seed * 1000 + info.rank)
        # each rank draws its own rounds (which language of each objective, AE's and BT's order), as each of the
        # original's ranks does: an update averages a mix of languages. Rank 0 draws one process's rounds
        # ([s, 0] seeds as s does)
        self.round_rng = np.random.default_rng([params.seed, info.rank])
        self.plan = Plan(params, self.iterators, masking, self.masking_generator, self.round_rng, sizes, self.lambdas)
        self.step_names = sorted(step_names(params), key=lambda name: original_order(name, params.langs))
        torch.manual_seed(params.seed + info.rank)  # dropout differs between ranks
        # best values are stored raw, with the original's starting points, as its checkpoints hold them
        self.state = LoopState(best_metrics={m.lstrip("_"): (1e12 if m.startswith("_") else -1e12)
                                             for m in filter(None, params.validation_metrics.split(","))},
                               best_stopping_criterion=(1e12 if params.stopping_criterion.startswith("_") else -1e12)
                               if params.stopping_criterion else None,
                               stopping_metric=params.stopping_criterion.split(",")[0])
        self.resume()
        self.consumed = self.plan.states()  # the plan's states after the last item trained on
        self.loss_sums = {}                 # key -> loss sum on the device, since the last progress line
        self.data_wait = self.window_start = 0.0
        self.window_carry = 0.0  # training seconds of the window an epoch's end left open (no evaluation's)

    # ------------------------------------------------------------------ checkpoints
    def train_state(self):
        self.fold_loss_sums()
        self.state.n_steps, self.state.n_nonfinite = self.engine.n_micro, self.engine.n_skipped
        # the generators' states of what the model consumed, not of what the pipeline made ahead
        rng = {**rng_state(self.info.device), "masking": self.consumed["masking"], "rounds": self.consumed["rounds"]}
        return {**asdict(self.state), "scaler": self.engine.scaler.state_dict(),
                "pending": self.engine.pending_gradients(self.models),
                "rng": gather_rank_states(rng, self.info), "world_size": self.info.world_size,
                "iterators": gather_rank_states(self.consumed["iterators"], self.info)}

    def save(self, name):
        """Write <dump>/<name>.pth (rank 0); every rank takes part because random states are gathered."""
        self.engine.settle()
        state = self.train_state()
        if self.info.is_master:
            save_training_checkpoint(os.path.join(self.dump, f"{name}.pth"), self.models, self.optimizers,
                                     self.data.dico, self.params, state)
            self.logger.info("Saved %s.pth", name)

    def save_model_only(self, name):
        if self.info.is_master:
            payload = checkpoint_payload(self.data.dico, vars(self.params), **self.models, epoch=self.state.epoch,
                                         n_total_iter=self.state.n_total_iter, best_metrics=self.state.best_metrics,
                                         best_stopping_criterion=self.state.best_stopping_criterion)
            save_checkpoint(payload, os.path.join(self.dump, f"{name}.pth"))
            self.logger.info("Saved %s.pth", name)

    def resume(self):
        path = os.path.join(self.dump, "checkpoint.pth")
        if not os.path.isfile(path):
            path = self.params.reload_checkpoint
            if not path:
                if self.params.eval_only and not self.params.reload_model:
                    self.logger.warning("--eval_only without --reload_model or --reload_checkpoint: evaluating "
                                        "randomly initialised weights")
                return
        saved = load_training_checkpoint(path, self.models, self.optimizers, self.logger, self.data.dico,
                                         self.params)
        fields, initial = LoopState.__dataclass_fields__, self.state
        self.state = LoopState(**{k: v for k, v in saved.items() if k in fields})
        # metrics or a criterion that the saved run did not track start from scratch
        self.state.best_metrics = {**initial.best_metrics, **self.state.best_metrics}
        if self.state.best_stopping_criterion is None:
            self.state.best_stopping_criterion = initial.best_stopping_criterion
        if self.state.stopping_metric != initial.stopping_metric and "stopping_metric" in saved:
            if initial.stopping_metric and self.state.stopping_metric:  # another metric's best is no bar for this one
                self.logger.warning("--stopping_criterion follows %s, where the saved run followed %s: its best "
                                    "score and count start afresh", initial.stopping_metric,
                                    self.state.stopping_metric)
            self.state.best_stopping_criterion = initial.best_stopping_criterion
            self.state.decrease_counts, self.state.stopping_metric = 0, initial.stopping_metric
        if "scaler" in saved:
            positions = saved_positions(saved["iterators"], self.info)
            for key, it in self.iterators.items():
                if "|".join(key) in positions:
                    try:
                        it.load_state_dict(positions["|".join(key)])
                    except DataError as e:  # another number of ranks, or another --seed
                        raise DataError(f"{path}: {e}; or start a new run from its weights (--reload_model "
                                        "takes them alone)") from None
                else:  # a step this run adds
                    self.logger.warning("%s: no saved position for the %s batches of %s: they start afresh",
                                        path, key[0], "-".join(key[1:]))
            self.engine.load_state_dict({"scaler": saved["scaler"], "n_micro": self.state.n_steps,
                                         "n_skipped": self.state.n_nonfinite, "pending": saved.get("pending")},
                                        self.models)
            rng = restore_rng_state(saved["rng"], self.info, self.logger)
            if rng:
                self.masking_generator.set_state(rng["masking"])
                self.round_rng.bit_generator.state = rng["rounds"]
        self.logger.info("Resumed from %s: epoch %i, iteration %i", path, self.state.epoch, self.state.n_total_iter)

    # ------------------------------------------------------------------ objective steps
    def loss(self, work):
        """The loss of a plan item, its inputs copied to the device."""
        p, objective, langs = self.params, work.objective, work.langs
        t = {k: v.to(self.info.device, non_blocking=True) if isinstance(v, torch.Tensor) else v
             for k, v in work.inputs.items()}
        if objective in ("clm", "mlm"):
            name = model_name(p, objective)
            return self.ddp[name](t["x"], t["lengths"], langs=t["langs"], positions=t["positions"],
                                  causal=objective == "clm", pred_mask=t["pred"], y=t["y"])
        if objective == "pc":
            name = model_name(p, objective)
            return pc_loss(self.ddp[name], self.models[name].embeddings.weight, t["x"], t["lengths"], t["positions"],
                           t["langs"], t["labels"])
        src, tgt = Batch(t["src_x"], t["src_lengths"]), Batch(t["x"], t["lengths"])
        src_lang, tgt_lang = (langs[0], langs[0]) if objective == "ae" else (langs[0], langs[1])
        if objective == "bt":
            # back-translation: translate l1 text to l2 with the current model (no gradient), then learn to
            # translate it back to l3 == l1
            src, src_lang, tgt_lang = self.back_translate(src, langs[0], langs[1], t["max_len"]), langs[1], langs[2]
        return mt_loss(self.ddp["encoder"], self.ddp["decoder"], src, p.lang2id[src_lang], tgt, p.lang2id[tgt_lang],
                       (t["pred"], t["y"]))

    @torch.no_grad()
    def back_translate(self, original, lang, to_lang, max_len):
        enc, dec = self.models["encoder"], self.models["decoder"]
        was_training = enc.training
        enc.eval(), dec.eval()
        with free_roundings():  # generate_greedy packs the decoder's weights
            encoded = enc(original.x, original.lengths, langs=self.params.lang2id[lang])
            x, lengths = generate_greedy(dec, encoded, original.lengths, self.params.lang2id[to_lang], max_len=max_len)
        enc.train(was_training), dec.train(was_training)
        return Batch(x, lengths)

    def optimize(self, name, compute_loss, lam=1.0, n_words=0, n_sents=0):
        """One objective step: compute_loss() -> loss, weighted by the objective's lambda; the engine updates
        every --accumulate_gradients steps. n_words and n_sents are what the progress line counts."""
        loss = self.engine.step(compute_loss, lam).double()
        self.loss_sums[name] = self.loss_sums[name] + loss if name in self.loss_sums else loss
        total = self.state.losses.setdefault(name, [0.0, 0])
        total[1] += 1
        self.state.n_words += n_words
        self.state.n_sents += n_sents
        self.state.n_sentences += self.params.batch_size

    # ------------------------------------------------------------------ progress, evaluation, epochs
    def fold_loss_sums(self):
        """Add the device's loss sums to the state's (a host synchronisation)."""
        names = list(self.loss_sums)
        for name, value in zip(names, torch.stack([self.loss_sums[n] for n in names]).tolist() if names else []):
            self.state.losses[name][0] += value
        self.loss_sums = {}

    def log_progress(self, elapsed, done):
        """elapsed: seconds since this process started the epoch, in which it trained `done` sentences."""
        s, p = self.state, self.params
        skipped = self.engine.settle()
        if skipped:
            self.logger.warning("Non-finite loss or float16 overflow: %i update(s) skipped before iteration %i "
                                "(%i so far)", skipped, s.n_total_iter, self.engine.n_skipped)
        self.fold_loss_sums()
        # every step's name, run since the last line on this rank or not (each rank draws its own rounds)
        names = self.step_names
        totals = [s.losses.get(name, (0.0, 0)) for name in names]
        sums = all_reduce_sum([t[0] for t in totals] + [t[1] for t in totals] + [s.n_words], self.info)
        k = len(names)
        means = {n: sums[i] / sums[k + i] for i, n in enumerate(names) if sums[k + i]}
        # the rates of this rank, as the original prints them (a log read beside the original's must not
        # show N ranks as N times the speed); the losses are the means over every rank's batches
        words, sents = s.n_words, s.n_sents
        seconds = max(time.time() - self.window_start, 1e-9)
        lr = " / ".join(f"{g['lr']:.4e}" for g in self.optimizers["model"].param_groups)
        eta = elapsed / max(done, 1) * max(p.epoch_size - s.n_sentences, 0)  # a resumed epoch: from the resume
        self.logger.info("%7i - %7.2f sent/s - %8.2f words/s - %s -  - model LR: %s - epoch %i - %i/%i sentences - "
                         "data wait %.0f%% - ETA epoch %s", s.n_total_iter, sents / seconds, words / seconds,
                         " || ".join(f"{n}: {v:7.4f}" for n, v in means.items()), lr, s.epoch, s.n_sentences,
                         p.epoch_size, 100 * self.data_wait / seconds, timedelta(seconds=round(eta)))
        self.metrics.write("train", s.n_total_iter, {"epoch": s.epoch, **means, "words_per_s": words / seconds,
                                                     "words_per_s_all_ranks": sums[2 * k] / seconds,
                                                     "data_wait": self.data_wait / seconds,
                                                     "lr": self.optimizers["model"].param_groups[0]["lr"]})
        s.losses, s.n_words, s.n_sents = {}, 0, 0
        self.window_start, self.data_wait = time.time(), 0.0

    def evaluate(self):
        scores = {"epoch": self.state.epoch}
        m = self.models
        # in a translation run, CLM is the decoder's and MLM the encoder's, as they were trained
        lm_models = {"clm": m["model"], "mlm": m["model"]} if self.params.encoder_only else \
            {"clm": m["decoder"], "mlm": m["encoder"]}
        # each rank evaluates its share of the sets; every rank gets the scores of the whole sets; on the
        # CPU each weight is reordered for oneDNN once for all the batches. In training, a signal that any
        # rank received stops the evaluation at its next batch
        check = functools.partial(self.signals.check_evaluation, self.info)
        log = self.logger.info
        with full_float32(), weights_packed():
            for split in ("valid", "test"):  # the original's order of the scores
                scores.update(evaluate_lm(lm_models, self.data, self.params, self.info, self.engine.autocast(), log,
                                          check, splits=[split]))
                if not self.params.encoder_only:
                    scores.update(evaluate_mt(m["encoder"], m["decoder"], self.data, self.params, self.info,
                                              self.engine.autocast(), self.state.epoch, self.dump, log, check,
                                              splits=[split]))
                scores.update(stream_means(scores, self.params, split))
        for k, v in scores.items():
            self.logger.info("%s -> %.6f", k, v)
        if self.info.is_master:
            self.logger.info("__log__:%s", json.dumps(scores))
        self.metrics.write("eval", self.state.n_total_iter, scores)
        return scores

    def end_of_epoch(self, scores):
        """Best models, periodic saves, the stopping criterion; True when training should stop."""
        p, s = self.params, self.state
        for metric in filter(None, p.validation_metrics.split(",")):
            name, smaller = metric.lstrip("_"), metric.startswith("_")
            if name not in scores:  # warned of at the start too (`check_metrics`)
                self.logger.warning('Metric "%s" not found in scores!', name)
                continue
            if (scores[name] < s.best_metrics[name]) if smaller else (scores[name] > s.best_metrics[name]):
                s.best_metrics[name] = scores[name]
                self.logger.info("New best score for %s: %.6f", name, scores[name])
                self.save_model_only(f"best-{name}")
        if p.save_periodic > 0 and s.epoch % p.save_periodic == 0:
            self.save_model_only(f"periodic-{s.epoch}")
        if p.stopping_criterion:
            metric, patience = p.stopping_criterion.split(",")
            name, factor = metric.lstrip("_"), -1 if metric.startswith("_") else 1
            if factor * scores[name] > factor * s.best_stopping_criterion:
                s.best_stopping_criterion, s.decrease_counts = scores[name], 0
                self.logger.info("New best validation score: %f", scores[name])
            else:  # the count before this epoch's, as the original's line
                self.logger.info("Not a better validation score (%i / %s).", s.decrease_counts, patience)
                s.decrease_counts += 1
            if s.decrease_counts > int(patience):
                self.logger.info("Stopping criterion has been below its best value for more than %s epochs. "
                                 "Ending the experiment...", patience)
                return True
        return False

    def stopped_by_signal(self):
        """At log lines (one process: after every round) and an epoch's end: every rank saves and stops if one
        of them was signalled."""
        if not self.signals.agreed(self.info):
            return False
        self.save("checkpoint")
        self.signals.stop(self.info)
        return True

    def run(self):
        p, s = self.params, self.state
        if p.eval_only:
            try:
                self.evaluate()
            except EvaluationStopped:  # nothing to save
                self.signals.stop(self.info)
            return
        if p.stopping_criterion and s.decrease_counts > int(p.stopping_criterion.split(",")[1]):
            # a rerun of a finished run trains no more, as after --max_epoch
            self.logger.info("The stopping criterion ended this run at epoch %i: nothing more to do.", s.epoch - 1)
            return
        plan = Prefetcher(self.plan.items(s.n_total_iter), pin=self.info.device.type == "cuda")
        try:
            self.train(plan)
        finally:
            plan.close()

    def train_round(self, plan):
        """The steps of one iteration, up to the plan's end-of-round item."""
        while True:
            waited = time.perf_counter()
            work = next(plan)
            self.data_wait += time.perf_counter() - waited
            if work.kind == "step":
                self.optimize(work.name, lambda: self.loss(work), work.lam, work.n_words, work.n_sents)
            elif work.kind == "skip":
                self.state.n_sentences += self.params.batch_size
            self.consumed = work.states
            if work.kind == "round":
                return

    def train(self, plan):
        p, s = self.params, self.state
        while s.epoch < p.max_epoch:
            self.logger.info("============ Starting epoch %i ... ============", s.epoch)
            epoch_start, start_sentences = time.time(), s.n_sentences
            self.window_start = epoch_start - self.window_carry
            while s.n_sentences < p.epoch_size:
                self.train_round(plan)
                s.n_total_iter += 1
                at_progress_line = s.n_total_iter % p.log_interval == 0
                if at_progress_line:
                    self.log_progress(time.time() - epoch_start, s.n_sentences - start_sentences)
                    if self.freed_memory:
                        self.freed_memory.check()
                # ranks agree on a signal at progress lines (a collective); one process stops after any round
                if (at_progress_line or not self.info.multi) and self.stopped_by_signal():
                    return
                if p.checkpoint_every and s.n_total_iter % p.checkpoint_every == 0:
                    self.save("checkpoint")
            self.logger.info("============ End of epoch %i ============", s.epoch)
            self.window_carry = time.time() - self.window_start
            # a signal since the last progress line stops the run here, before the evaluation (which may
            # outlast SLURM's warning); the rerun evaluates this epoch
            if self.stopped_by_signal():
                return
            try:
                scores = self.evaluate()
            except EvaluationStopped:  # saved as before the evaluation, which the rerun does
                self.save("checkpoint")
                self.signals.stop(self.info)
                return
            # rank 0 decides, so that no rank can stop alone
            stop = broadcast_from_master(self.end_of_epoch(scores), self.info)
            s.epoch, s.n_sentences = s.epoch + 1, 0
            self.save("checkpoint")
            if stop:
                return
        self.logger.info("Reached --max_epoch %i.", p.max_epoch)


def main(argv=None):
    params = parse_params(argv)
    try:
        with removed_on_failure(params):
            trainer = Trainer(params)
        with failure_logged(trainer.logger, params):
            trainer.run()
        shutdown(trainer.info)
    finally:
        release_folders()
    if trainer.signals.exit_status is not None:
        sys.exit(trainer.signals.exit_status)  # the shell's status of a signalled command: the run is not over
