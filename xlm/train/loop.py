"""The training loop of train.py, read top to bottom: set-up, resume, epochs of rounds of objective
steps, evaluation, checkpoints. Objectives are functions of a batch (xlm/objectives); the model knows
nothing of this file.
"""
import json
import os
import pickle
import random
import signal
import subprocess
import time
import zlib
from contextlib import ExitStack, nullcontext
from dataclasses import asdict, dataclass, field
from datetime import timedelta

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from ..data.datasets import Batch, BatchingOptions, ParallelDataset, SentenceDataset, StreamDataset
from ..data.iterators import BatchIterator
from ..data.loader import load_training_data
from ..evaluation.lm import evaluate_lm, metric_names
from ..evaluation.mt import evaluate_mt
from ..fileio import DataError, atomic_write
from ..model.checkpoint import (checkpoint_payload, config_from_params, load_weights, read_checkpoint,
                                save_checkpoint, strip_module_prefix)
from ..model.generate import generate_greedy
from ..model.transformer import N_MAX_POSITIONS, TransformerModel
from ..model.word_vectors import reload_word_vectors
from ..objectives.lm import MaskingConfig, clm_targets, concat_pair, mask_for_training
from ..objectives.mt import add_noise, mt_loss
from ..objectives.pc import pc_batch, pc_loss
from .checkpointing import gather_rng_states, load_training_checkpoint, rng_state, save_training_checkpoint, \
    set_rng_state
from .compile import BucketPadded
from .distributed import all_reduce_sum, any_rank, init_distributed
from .logging import MetricsWriter, create_logger
from .options import parse_params
from .schedules import LambdaSchedule, build_optimizer, clip_grad_norm_, update_lr

MAX_CONSECUTIVE_NONFINITE = 20


@dataclass
class LoopState:
    epoch: int = 0
    n_total_iter: int = 0
    n_steps: int = 0            # backward passes, for gradient accumulation
    n_sentences: int = 0        # this epoch, + batch_size per step as the original counts
    best_metrics: dict = field(default_factory=dict)
    best_stopping_criterion: float = None
    decrease_counts: int = 0
    n_nonfinite: int = 0
    consecutive_nonfinite: int = 0
    losses: dict = field(default_factory=dict)   # key -> [sum, count] since the last progress line
    n_words: int = 0            # predicted tokens since the last progress line
    n_sents: int = 0


def prepare_dump(params, info):
    """dump_path/exp_name/exp_id, and params.pkl (as the original) and params.json in it."""
    dump = os.path.join(params.dump_path, params.exp_name, params.exp_id)
    os.makedirs(dump, exist_ok=True)
    params.dump_path = dump
    if info.is_master and not os.path.exists(os.path.join(dump, "params.pkl")):
        with atomic_write(os.path.join(dump, "params.pkl")) as f:
            pickle.dump(params, f)
        with atomic_write(os.path.join(dump, "params.json"), "w") as f:
            json.dump(vars(params), f, indent=1, default=str)
    return dump


def build_iterators(params, data, info):
    """One resumable iterator per (objective, languages), keyed like the original (causal / pred / align /
    ae / bt / mt). Each draws its own order, as the original's do: AE and BT on one language, or MLM and
    MT on one pair, must not see the same batches in lockstep."""
    iterators = {}
    world = info.world_size
    # --batch_size and --tokens_per_batch are per rank; a global batch holds every rank's rows
    batching = BatchingOptions(params.batch_size * world, params.tokens_per_batch * world
                               if params.tokens_per_batch > 0 else -1, params.max_batch_size * world,
                               params.group_by_size, params.tokens_per_batch_padded)

    def add(key, dataset, rank=info.rank, world_size=world):
        if key not in iterators:
            seed = zlib.crc32("|".join(map(str, (params.seed,) + key)).encode())  # the same on every rank
            iterators[key] = BatchIterator(dataset, seed, rank, world_size)

    for objective, steps in (("causal", params.clm_steps), ("pred", params.mlm_steps)):
        for l1, l2 in steps:
            if l2 is None and l1 in data.sharded:
                # this rank's own shard file: its own batches, not rows of global ones
                add((objective, l1), StreamDataset(data.mono[l1]["train"], params.batch_size, params.bptt,
                                                   data.n_words), 0, 1)
            elif l2 is None:
                add((objective, l1), StreamDataset(data.mono[l1]["train"], params.batch_size * world, params.bptt,
                                                   data.n_words))
            else:
                a, b = sorted((l1, l2))
                add((objective, a, b), ParallelDataset(*data.para[(a, b)]["train"], batching, params.max_len,
                                                       data.n_words))
    for objective, langs in (("ae", params.ae_steps), ("bt", [l1 for l1, _, _ in params.bt_steps])):
        for lang in langs:
            add((objective, lang), SentenceDataset(data.mono[lang]["train"], batching, params.max_len, data.n_words))
    for objective, steps in (("align", params.pc_steps), ("mt", params.mt_steps)):
        for l1, l2 in steps:
            a, b = sorted((l1, l2))
            add((objective, a, b), ParallelDataset(*data.para[(a, b)]["train"], batching, params.max_len,
                                                   data.n_words))
    return iterators


def check_positions(params, source):
    """Refuse inputs longer than the position table, which torch would report deep in an embedding lookup."""
    lm_steps = list(params.clm_steps) + list(params.mlm_steps)
    if any(l2 is None for _, l2 in lm_steps) and params.bptt > params.n_positions:
        raise DataError(f"--bptt {params.bptt} is longer than the {params.n_positions} positions of the model{source}")
    sentences = any(l2 is not None for _, l2 in lm_steps) or params.ae_steps or params.bt_steps or params.mt_steps
    if sentences and params.max_len + 2 > params.n_positions:
        raise DataError(f"--max_len {params.max_len}: a sentence and its two </s> would not fit the "
                        f"{params.n_positions} positions of the model{source}")


def build_models(params, dico, device, logger):
    """{'model': encoder} for pretraining, {'encoder', 'decoder'} for translation, with --reload_emb and
    --reload_model (which, read last as in the original, overrides the word vectors).

    The original has no flag for the position table (512 rows) and the LayerNorm eps (1e-12): a reloaded
    model (a converted Hugging Face one may differ) sets them, and params carries them into this run's
    checkpoints."""
    names = ["model"] if params.encoder_only else ["encoder", "decoder"]
    paths = {name: path for name, path in zip(names, params.reload_model_paths) if path}
    files = {path: read_checkpoint(path) for path in paths.values()}  # encoder and decoder often share one
    source = next(iter(files), "")
    reloaded_params = (files[source].get("params") or {}) if source else {}
    params.n_positions = reloaded_params.get("n_positions", N_MAX_POSITIONS)
    params.layer_norm_eps = reloaded_params.get("layer_norm_eps", 1e-12)
    check_positions(params, f" ({source})" if source else "")
    models = {name: TransformerModel(config_from_params(vars(params), len(dico), is_decoder=name == "decoder"))
              for name in names}
    if params.reload_emb:
        reload_word_vectors(list(models.values()), dico, params.reload_emb, logger)
    for name, path in paths.items():
        model, data = models[name], files[path]
        # a pretrained file has 'model'; a translation file 'encoder' and 'decoder'
        state = strip_module_prefix(data.get("model", data.get(name, data.get("encoder", {}))))
        if name == "decoder":
            # a decoder initialised from a pretrained encoder keeps its fresh cross-attention, as the original
            fresh = model.state_dict()
            missing = [k for k in fresh if k not in state and k.startswith(("encoder_attn.", "layer_norm15."))]
            if missing:
                logger.warning("%s: %i decoder-only parameters (cross-attention) keep their initialisation",
                               path, len(missing))
                state = {**state, **{k: fresh[k] for k in missing}}
        load_weights(model, state, f"{path} ({name})")
        logger.info("Reloaded the %s from %s", name, path)
    if not params.encoder_only and not params.mlm_steps:
        # the encoder's output layer is never used in translation: frozen, so that distributed training does
        # not wait for its gradients (its weight, tied to the input embeddings, stays trained)
        encoder = models["encoder"]
        for p in encoder.pred_layer.parameters():
            if p is not encoder.embeddings.weight:
                p.requires_grad = False
    for name, model in models.items():
        logger.info("%s: %i parameters", name, sum(p.numel() for p in model.parameters()))
    return {k: m.to(device) for k, m in models.items()}


def sample_round(steps, sizes, alpha, rng, n=5):
    """The steps of one round of an objective, as the original draws them: min(n, #monolingual) draws
    among the monolingual steps, then min(n, #pairs) among the pairs, with replacement; uniform, or with
    --lg_sampling_factor alpha, p proportional to (training sentences)^alpha. So `--mlm_steps en,fr` may
    run en twice and fr never in a round, and 15 MLM + 28 TLM steps run 5 + 5 steps a round."""
    drawn = []
    for group in ([s for s in steps if s[1] is None], [s for s in steps if s[1] is not None]):
        if not group:
            continue
        p = None
        if alpha != -1:
            p = np.array([sizes[s] for s in group], dtype=np.float64) ** alpha
            p /= p.sum()
        drawn += [group[i] for i in rng.choice(len(group), size=min(n, len(group)), p=p, replace=True)]
    return drawn


class Trainer:
    def __init__(self, params):
        self.params = params
        self.info = info = init_distributed(params)
        self.dump = prepare_dump(params, info)
        self.logger = create_logger(os.path.join(self.dump, "train.log"), info.rank)
        self.logger.info("============ Initialized logger ============")
        self.logger.info("\n".join(f"{k}: {v}" for k, v in sorted(vars(params).items())))
        self.logger.info("The experiment will be stored in %s\nRunning command: %s", self.dump, params.command)
        self.metrics = MetricsWriter(self.dump, info.is_master)
        random.seed(params.seed)
        np.random.seed(params.seed)
        torch.manual_seed(params.seed)  # the same initial weights on every rank

        self.data = load_training_data(params, self.logger, info.local_rank)
        unknown = [m.lstrip("_") for m in filter(None, params.validation_metrics.split(","))
                   if m.lstrip("_") not in metric_names(params)]
        if params.stopping_criterion:
            metric = params.stopping_criterion.split(",")[0].lstrip("_")
            unknown += [] if metric in metric_names(params) else [metric]
        if unknown:
            raise DataError(f"unknown metrics {', '.join(unknown)}; this run computes {', '.join(metric_names(params))}")
        params.n_words = self.data.n_words
        self.models = build_models(params, self.data.dico, info.device, self.logger)
        named = [(n, p) for m in self.models.values() for n, p in m.named_parameters() if p.requires_grad]
        memory_values = [p for n, p in named if n.endswith(".values.weight")]
        others = [p for n, p in named if not n.endswith(".values.weight")]
        self.optimizers = {"model": build_optimizer(others, params.optimizer)}
        if memory_values:
            self.optimizers["memory"] = build_optimizer(memory_values, params.mem_values_optimizer,
                                                        "mem_values_optimizer")
        self.param_sets = {"model": others, "memory": memory_values}
        self.scaler = torch.amp.GradScaler(info.device.type, enabled=params.fp16)
        amp_dtype = torch.float16 if params.fp16 else torch.bfloat16 if params.bf16 else None
        self.autocast = torch.autocast(info.device.type, dtype=amp_dtype) if amp_dtype else nullcontext()
        self.lambdas = {o: LambdaSchedule.parse(getattr(params, f"lambda_{o}"))
                        for o in ("clm", "mlm", "pc", "ae", "mt", "bt")}
        self.iterators = build_iterators(params, self.data, info) if not params.eval_only else {}
        # training sentences of each step's data, for --lg_sampling_factor (pairs after the max_len filter)
        self.sizes = {} if params.eval_only else {
            s: len(self.data.mono[s[0]]["train"]) if s[1] is None else
            len(self.iterators[next(k for k in self.iterators if k[1:] == tuple(sorted(s)))].dataset)
            for s in params.clm_steps + params.mlm_steps + params.pc_steps + params.mt_steps}
        self.masking = MaskingConfig.from_params(params, self.data.dico, self.data.n_words)
        self.masking_generator = torch.Generator().manual_seed(params.seed * 1000 + info.rank)
        self.round_rng = np.random.default_rng(params.seed)  # the same on every rank: ranks run the same steps
        torch.manual_seed(params.seed + info.rank)  # dropout differs between ranks
        # best values are stored raw, with the original's starting points, as its checkpoints hold them
        self.state = LoopState(best_metrics={m.lstrip("_"): (1e12 if m.startswith("_") else -1e12)
                                             for m in filter(None, params.validation_metrics.split(","))},
                               best_stopping_criterion=(1e12 if params.stopping_criterion.startswith("_") else -1e12)
                               if params.stopping_criterion else None)
        self.resume()
        device_ids = [info.local_rank] if info.device.type == "cuda" else None
        # steps that leave parameters out: PC the output layer, a decoder's CLM its cross-attention, and a
        # batch without a target in some cluster of the adaptive softmax that cluster
        partial = bool(params.pc_steps) or not params.encoder_only and bool(params.clm_steps or params.mlm_steps)
        trained = {k: BucketPadded(m) if params.compile else m for k, m in self.models.items()}
        self.ddp = {k: DistributedDataParallel(trained[k], device_ids=device_ids,
                                               find_unused_parameters=partial or m.config.asm)
                    if info.multi else trained[k] for k, m in self.models.items()}
        self.stop_signal = None
        for sig in (signal.SIGUSR1, signal.SIGTERM):
            signal.signal(sig, self._on_signal)

    # ------------------------------------------------------------------ checkpoints
    def train_state(self):
        states = gather_rng_states(rng_state(self.masking_generator, self.round_rng), self.info)
        return {**asdict(self.state), "scaler": self.scaler.state_dict(), "rng": states,
                "world_size": self.info.world_size,
                "iterators": {"|".join(k): it.state_dict() for k, it in self.iterators.items()}}

    def save(self, name):
        """Write <dump>/<name>.pth (rank 0); every rank takes part because random states are gathered."""
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
                return
        saved = load_training_checkpoint(path, self.models, self.optimizers, self.logger)
        fields, initial = LoopState.__dataclass_fields__, self.state
        self.state = LoopState(**{k: v for k, v in saved.items() if k in fields})
        # metrics or a criterion that the saved run did not track start from scratch
        self.state.best_metrics = {**initial.best_metrics, **self.state.best_metrics}
        if self.state.best_stopping_criterion is None:
            self.state.best_stopping_criterion = initial.best_stopping_criterion
        if "scaler" in saved:
            self.scaler.load_state_dict(saved["scaler"])
            if saved["world_size"] == self.info.world_size:
                set_rng_state(saved["rng"][self.info.rank], self.masking_generator, self.round_rng)
            else:
                self.logger.warning("Resuming with %i ranks a run saved with %i: random states are not restored",
                                    self.info.world_size, saved["world_size"])
            for key, it in self.iterators.items():
                it.load_state_dict(saved["iterators"]["|".join(key)])
        self.logger.info("Resumed from %s: epoch %i, iteration %i", path, self.state.epoch, self.state.n_total_iter)

    def _on_signal(self, signum, frame):
        self.stop_signal = signum
        self.logger.warning("Received signal %i: saving a checkpoint at the next step boundary", signum)

    # ------------------------------------------------------------------ objective steps
    def to_device(self, t):
        return None if t is None else t.to(self.info.device, non_blocking=True)

    def batch(self, objective, l1, l2):
        """(x, lengths, positions, langs, stream?) of the next LM batch of an objective, on the CPU."""
        p = self.params
        if l2 is None:
            b = next(self.iterators[(objective, l1)])
            langs = torch.full_like(b.x, p.lang2id[l1]) if p.n_langs > 1 else None
            return b.x, b.lengths, None, langs, True
        a, b = sorted((l1, l2))
        first, second = next(self.iterators[(objective, a, b)])
        if (l1, l2) != (a, b):
            first, second = second, first
        x, lengths, positions, langs = concat_pair(first, p.lang2id[l1], second, p.lang2id[l2])
        return x, lengths, positions, langs, False

    def lm_step(self, objective, l1, l2):
        """CLM, or MLM / TLM, on the next batch; in a translation run, as the original, CLM trains the
        decoder (without source) and MLM the encoder."""
        name = "model" if self.params.encoder_only else "decoder" if objective == "clm" else "encoder"

        def loss():
            x, lengths, positions, langs, stream = self.batch("causal" if objective == "clm" else "pred", l1, l2)
            if objective == "clm":
                pred_mask, y = clm_targets(x, lengths, self.params.context_size)
            else:
                x, pred_mask, y = mask_for_training(x, lengths, self.masking, self.masking_generator)
            to = self.to_device
            return self.ddp[name](to(x), None if stream else to(lengths), langs=to(langs), positions=to(positions),
                                  causal=objective == "clm", pred_mask=to(pred_mask), y=to(y)), len(y)
        self.optimize(objective, f"{objective.upper()}-{l1}" + (f"-{l2}" if l2 else ""), loss)

    def pc_step(self, l1, l2):
        """Parallel classification: translation or not, on the next batch of aligned pairs."""
        p = self.params
        name = "model" if p.encoder_only else "encoder"
        a, b = sorted((l1, l2))
        first, second = next(self.iterators[("align", a, b)])
        if (l1, l2) != (a, b):
            first, second = second, first
        if len(first.lengths) == 1:  # no other sentence to pair with: skipped, as the original
            self.state.n_sentences += p.batch_size
            return
        x, lengths, positions, langs, labels = pc_batch(first, p.lang2id[l1], second, p.lang2id[l2],
                                                        self.masking_generator)
        to = self.to_device
        self.optimize("pc", f"PC-{l1}-{l2}", lambda: (
            pc_loss(self.ddp[name], self.models[name].embeddings.weight, to(x), to(lengths), to(positions), to(langs),
                    to(labels)), len(labels)))

    def _on_device(self, batch):
        return Batch(self.to_device(batch.x), self.to_device(batch.lengths))

    def ae_step(self, lang):
        """Denoising auto-encoding: rebuild a sentence from its noisy version."""
        def loss():
            p = self.params
            clean = next(self.iterators[("ae", lang)])
            noisy = add_noise(clean, p.word_shuffle, p.word_dropout, p.word_blank, self.masking_generator)
            lang_id = p.lang2id[lang]
            return (mt_loss(self.ddp["encoder"], self.ddp["decoder"], self._on_device(noisy), lang_id,
                            self._on_device(clean), lang_id), int((clean.lengths - 1).sum()))
        self.optimize("ae", f"AE-{lang}", loss)

    def mt_step(self, l1, l2):
        """Supervised translation from l1 to l2 on parallel data."""
        def loss():
            a, b = sorted((l1, l2))
            first, second = next(self.iterators[("mt", a, b)])
            src, tgt = (first, second) if (l1, l2) == (a, b) else (second, first)
            return (mt_loss(self.ddp["encoder"], self.ddp["decoder"], self._on_device(src), self.params.lang2id[l1],
                            self._on_device(tgt), self.params.lang2id[l2]), int((tgt.lengths - 1).sum()))
        self.optimize("mt", f"MT-{l1}-{l2}", loss)

    def bt_step(self, l1, l2, l3):
        """Online back-translation: translate l1 text to l2 with the current model (no gradient), then
        learn to translate it back to l3 == l1."""
        def loss():
            p = self.params
            enc, dec = self.models["encoder"], self.models["decoder"]
            original = self._on_device(next(self.iterators[("bt", l1)]))
            was_training = enc.training
            enc.eval(), dec.eval()
            with torch.no_grad():
                encoded = enc(original.x, original.lengths, langs=p.lang2id[l1])
                max_len = min(int(1.3 * int(original.lengths.max()) + 5), dec.config.n_positions)
                x2, len2 = generate_greedy(dec, encoded, original.lengths, p.lang2id[l2], max_len=max_len)
            enc.train(was_training), dec.train(was_training)
            return (mt_loss(self.ddp["encoder"], self.ddp["decoder"], Batch(x2, len2), p.lang2id[l2], original,
                            p.lang2id[l3]), int((original.lengths - 1).sum()))
        self.optimize("bt", f"BT-{l1}-{l2}-{l3}", loss)

    def optimize(self, objective, name, compute_loss):
        """One objective step: forward (compute_loss() -> (loss, predicted tokens)), backward, and an
        optimizer step every --accumulate_gradients steps; a non-finite loss skips the step."""
        p, state = self.params, self.state
        lam = self.lambdas[objective](state.n_total_iter)
        if lam == 0:
            return
        sync = (state.n_steps + 1) % p.accumulate_gradients == 0
        with ExitStack() as stack:
            if self.info.multi and not sync:
                for ddp in self.ddp.values():
                    stack.enter_context(ddp.no_sync())
            with self.autocast:
                loss, n_predicted = compute_loss()
            finite = not any_rank(not torch.isfinite(loss).item(), self.info)
            if not finite:
                state.n_nonfinite += 1
                state.consecutive_nonfinite += 1
                self.logger.warning("Non-finite loss at iteration %i (%s): step skipped (%i so far)",
                                    state.n_total_iter, name, state.n_nonfinite)
                if state.consecutive_nonfinite >= MAX_CONSECUTIVE_NONFINITE:
                    raise RuntimeError(f"{MAX_CONSECUTIVE_NONFINITE} non-finite losses in a row: the run diverged; "
                                       "lower the learning rate or use --bf16 instead of --fp16")
                return
            self.scaler.scale(loss * lam / p.accumulate_gradients).backward()
        state.consecutive_nonfinite = 0
        state.n_steps += 1
        if sync:
            for optimizer in self.optimizers.values():
                self.scaler.unscale_(optimizer)
            if p.clip_grad_norm > 0:
                for params_ in self.param_sets.values():
                    if params_:
                        clip_grad_norm_(params_, p.clip_grad_norm)
            for optimizer in self.optimizers.values():
                self.scaler.step(optimizer)
            self.scaler.update()
            for optimizer in self.optimizers.values():
                optimizer.zero_grad(set_to_none=True)
                update_lr(optimizer)
        total = state.losses.setdefault(name, [0.0, 0])
        total[0], total[1] = total[0] + loss.item(), total[1] + 1
        state.n_words += n_predicted
        state.n_sents += p.batch_size
        state.n_sentences += p.batch_size

    # ------------------------------------------------------------------ progress, evaluation, epochs
    def log_progress(self, elapsed):
        s, p = self.state, self.params
        names = sorted(s.losses)
        sums = all_reduce_sum([s.losses[k][0] for k in names] + [s.losses[k][1] for k in names] +
                              [s.n_words, s.n_sents], self.info)
        k = len(names)
        means = {n: sums[i] / max(sums[k + i], 1) for i, n in enumerate(names)}
        words, sents = sums[2 * k], sums[2 * k + 1]
        lr = " / ".join(f"{g['lr']:.4e}" for g in self.optimizers["model"].param_groups)
        eta = elapsed / max(s.n_sentences, 1) * max(p.epoch_size - s.n_sentences, 0)
        self.logger.info("%7i - %7.2f sent/s - %8.2f words/s - %s - model LR: %s - epoch %i - %i/%i sentences - "
                         "ETA epoch %s", s.n_total_iter, sents / self.window_time(), words / self.window_time(),
                         " || ".join(f"{n}: {v:7.4f}" for n, v in means.items()), lr, s.epoch, s.n_sentences,
                         p.epoch_size, timedelta(seconds=round(eta)))
        self.metrics.write("train", s.n_total_iter, {"epoch": s.epoch, **means, "words_per_s": words / self.window_time(),
                                                     "lr": self.optimizers["model"].param_groups[0]["lr"]})
        s.losses, s.n_words, s.n_sents = {}, 0, 0
        self.window_start = time.time()

    def window_time(self):
        return max(time.time() - self.window_start, 1e-9)

    def evaluate(self):
        scores = {"epoch": self.state.epoch}
        m = self.models
        # in a translation run, CLM is the decoder's and MLM the encoder's, as they were trained
        lm_models = {"clm": m["model"], "mlm": m["model"]} if self.params.encoder_only else \
            {"clm": m["decoder"], "mlm": m["encoder"]}
        scores.update(evaluate_lm(lm_models, self.data, self.params, self.info.device, self.autocast,
                                  log=self.logger.info))
        if not self.params.encoder_only:
            scores.update(evaluate_mt(self.models["encoder"], self.models["decoder"], self.data, self.params,
                                      self.info.device, self.autocast, self.state.epoch, self.dump,
                                      log=self.logger.info, write_files=self.info.is_master))
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
            else:
                s.decrease_counts += 1
                self.logger.info("Not a better validation score (%i / %s).", s.decrease_counts, patience)
            if s.decrease_counts > int(patience):
                self.logger.info("Stopping criterion has been below its best value for more than %s epochs. "
                                 "Ending the experiment...", patience)
                return True
        return False

    def run(self):
        p, s = self.params, self.state
        if p.eval_only:
            self.evaluate()
            return
        while s.epoch < p.max_epoch:
            self.logger.info("============ Starting epoch %i ... ============", s.epoch)
            epoch_start = self.window_start = time.time()
            while s.n_sentences < p.epoch_size:
                for objective, steps in (("clm", p.clm_steps), ("mlm", p.mlm_steps)):
                    for l1, l2 in sample_round(steps, self.sizes, p.lg_sampling_factor, self.round_rng):
                        self.lm_step(objective, l1, l2)
                for l1, l2 in sample_round(p.pc_steps, self.sizes, p.lg_sampling_factor, self.round_rng):
                    self.pc_step(l1, l2)
                # as the original: AE and BT steps once each per round, in a random order
                for i in self.round_rng.permutation(len(p.ae_steps)):
                    self.ae_step(p.ae_steps[i])
                for l1, l2 in sample_round(p.mt_steps, self.sizes, p.lg_sampling_factor, self.round_rng):
                    self.mt_step(l1, l2)
                for i in self.round_rng.permutation(len(p.bt_steps)):
                    self.bt_step(*p.bt_steps[i])
                s.n_total_iter += 1
                if s.n_total_iter % p.log_interval == 0:
                    self.log_progress(time.time() - epoch_start)
                    if any_rank(self.stop_signal is not None, self.info):
                        self.save("checkpoint")
                        if self.stop_signal == signal.SIGUSR1 and self.info.is_master and "SLURM_JOB_ID" in os.environ:
                            subprocess.call(["scontrol", "requeue", os.environ["SLURM_JOB_ID"]])
                        self.logger.warning("Stopped by signal %i after saving; rerun the command to resume",
                                            self.stop_signal)
                        return
                if p.checkpoint_every and s.n_total_iter % p.checkpoint_every == 0:
                    self.save("checkpoint")
            self.logger.info("============ End of epoch %i ============", s.epoch)
            stop = self.end_of_epoch(self.evaluate())
            s.epoch, s.n_sentences = s.epoch + 1, 0
            self.save("checkpoint")
            if stop:
                return
        self.logger.info("Reached --max_epoch %i.", p.max_epoch)


def main(argv=None):
    trainer = Trainer(parse_params(argv))
    trainer.run()
    if trainer.info.multi:
        torch.distributed.destroy_process_group()
