"""What train.py trains on, in order: rounds of objective steps with their batches and masks, made on the
CPU by a background thread a few steps ahead of the model (torch and numpy release the GIL), pinned for
the copy to a GPU.

The order and every random draw (rounds, batches, masks, noise) are those of a loop making them one by
one: the producer owns the iterators, the masking generator and the round generator, and each item
carries their states after it, so that a checkpoint saves the state of what the model consumed, not of
what was made ahead of it.
"""
import queue
import threading
from dataclasses import dataclass

import numpy as np
import torch

from ..model.transformer import flat_positions
from ..objectives.lm import clm_targets, concat_pair, mask_for_training
from ..objectives.mt import add_noise, decoder_positions
from ..objectives.pc import pc_batch


@dataclass
class Work:
    kind: str              # 'step', 'skip' (a PC batch of one pair: counted, not trained) or 'round' (its end)
    objective: str = ""    # clm, mlm, pc, ae, mt, bt
    name: str = ""         # MLM-en-fr, ...
    langs: tuple = ()
    lam: float = 1.0       # the objective's --lambda_* at this round (never 0: such steps are not made)
    inputs: dict = None    # CPU tensors
    # as the original's progress line counts them: "words" are the predicted tokens (all tokens of a PC
    # batch), "sentences" the rows (pairs) of the batch
    n_words: int = 0
    n_sents: int = 0
    states: dict = None    # the producer's iterator and generator states after this item


def training_sizes(params, data, iterators):
    """The training sentences of each CLM, MLM, PC and MT step's data, which --lg_sampling_factor weighs: a
    language's monolingual corpus, or a pair's sentences after the --max_len filter (its iterator's)."""
    def size(step):
        if step[1] is None:
            return len(data.mono[step[0]]["train"])
        return len(next(it for key, it in iterators.items() if key[1:] == step).dataset)
    return {step: size(step) for step in params.clm_steps + params.mlm_steps + params.pc_steps + params.mt_steps}


def step_name(objective, langs):
    """A step's name on the progress line, as the original's: MLM-en, MLM-en-fr, AE-en, BT-en-fr-en."""
    return "-".join([objective.upper()] + [lg for lg in langs if lg])


def step_names(params):
    """The name of every step a run's rounds may hold."""
    steps = {"clm": params.clm_steps, "mlm": params.mlm_steps, "pc": params.pc_steps,
             "ae": [(lang,) for lang in params.ae_steps], "mt": params.mt_steps, "bt": params.bt_steps}
    return [step_name(objective, langs) for objective, group in steps.items() for langs in group]


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
            # in logs: a large alpha would overflow sizes ** alpha (or underflow the original's shares ** alpha)
            log_p = alpha * np.log(np.array([sizes[s] for s in group], dtype=np.float64))
            p = np.exp(log_p - log_p.max())
            p /= p.sum()
        drawn += [group[i] for i in rng.choice(len(group), size=min(n, len(group)), p=p, replace=True)]
    return drawn


class Plan:
    """The training items, epoch after epoch, from the loop counters where a run starts or resumed."""

    def __init__(self, params, iterators, masking, generator, round_rng, sizes, lambdas):
        self.p, self.iterators, self.masking, self.generator = params, iterators, masking, generator
        self.round_rng, self.sizes, self.lambdas = round_rng, sizes, lambdas
        self.makers = {"clm": self.clm, "mlm": self.mlm, "pc": self.pc, "ae": self.ae, "mt": self.mt, "bt": self.bt}

    def states(self):
        return {"masking": self.generator.get_state(), "rounds": self.round_rng.bit_generator.state,
                "iterators": {"|".join(k): it.state_dict() for k, it in self.iterators.items()}}

    def items(self, n_total_iter):
        p = self.p
        while True:
            rounds = [("clm", s) for s in sample_round(p.clm_steps, self.sizes, p.lg_sampling_factor, self.round_rng)]
            rounds += [("mlm", s) for s in sample_round(p.mlm_steps, self.sizes, p.lg_sampling_factor, self.round_rng)]
            rounds += [("pc", s) for s in sample_round(p.pc_steps, self.sizes, p.lg_sampling_factor, self.round_rng)]
            # as the original: AE and BT steps once each per round, in a random order
            rounds += [("ae", (p.ae_steps[i],)) for i in self.round_rng.permutation(len(p.ae_steps))]
            rounds += [("mt", s) for s in sample_round(p.mt_steps, self.sizes, p.lg_sampling_factor, self.round_rng)]
            rounds += [("bt", p.bt_steps[i]) for i in self.round_rng.permutation(len(p.bt_steps))]
            for objective, langs in rounds:
                lam = self.lambdas[objective](n_total_iter)
                if lam == 0:
                    continue
                work = self.makers[objective](*langs)
                work.objective, work.langs, work.lam = objective, tuple(langs), lam
                work.name = step_name(objective, langs)
                work.states = self.states()
                yield work
            n_total_iter += 1
            yield Work("round", states=self.states())

    def _pair(self, objective, l1, l2):
        first, second = next(self.iterators[(objective, l1, l2)])  # the pair's dataset: its sides in sorted order
        return (first, second) if l1 <= l2 else (second, first)

    def _lm(self, objective, l1, l2):
        """CLM, or MLM / TLM: (x, lengths or None for a stream, positions, langs, predicted positions, targets)."""
        p = self.p
        key = "causal" if objective == "clm" else "pred"
        if l2 is None:
            b = next(self.iterators[(key, l1)])
            x, lengths, positions = b.x, None, None
            langs = torch.full_like(b.x, p.lang2id[l1]) if p.n_langs > 1 else None
        else:
            first, second = self._pair(key, l1, l2)
            x, lengths, positions, langs = concat_pair(first, p.lang2id[l1], second, p.lang2id[l2])
        full = lengths if lengths is not None else torch.full((len(x),), x.shape[1])
        if objective == "clm":
            pred_mask, y = clm_targets(x, full, p.context_size)
        else:
            x, pred_mask, y = mask_for_training(x, full, self.masking, self.generator)
        inputs = dict(x=x, lengths=lengths, positions=positions, langs=langs, pred=flat_positions(pred_mask), y=y)
        return Work("step", inputs=inputs, n_words=len(y), n_sents=len(x))

    def clm(self, l1, l2):
        return self._lm("clm", l1, l2)

    def mlm(self, l1, l2):
        return self._lm("mlm", l1, l2)

    def pc(self, l1, l2):
        first, second = self._pair("align", l1, l2)
        if len(first.lengths) == 1:  # no other sentence to pair with: skipped, as the original
            return Work("skip")
        x, lengths, positions, langs, labels = pc_batch(first, self.p.lang2id[l1], second, self.p.lang2id[l2],
                                                        self.generator)
        return Work("step", inputs=dict(x=x, lengths=lengths, positions=positions, langs=langs, labels=labels),
                    n_words=int(lengths.sum()), n_sents=len(labels))

    def _translation(self, src, tgt, **extra):
        pred, y = decoder_positions(tgt.x, tgt.lengths)
        inputs = dict(src_x=src.x, src_lengths=src.lengths, x=tgt.x, lengths=tgt.lengths, pred=pred, y=y, **extra)
        return Work("step", inputs=inputs, n_words=len(y), n_sents=len(tgt.lengths))

    def ae(self, lang):
        """Denoising auto-encoding: rebuild a sentence from its noisy version."""
        p = self.p
        clean = next(self.iterators[("ae", lang)])
        return self._translation(add_noise(clean, p.word_shuffle, p.word_dropout, p.word_blank, self.generator), clean)

    def mt(self, l1, l2):
        return self._translation(*self._pair("mt", l1, l2))

    def bt(self, l1, l2, l3):
        """The sentences to back-translate (the model generates their source when the step runs)."""
        original = next(self.iterators[("bt", l1)])
        work = self._translation(original, original)
        # the longest generated translation, read here rather than from the device copy; the encoder reads
        # the translation next, so all of it must fit its positions (where the original fails)
        work.inputs["max_len"] = min(int(1.3 * int(original.lengths.max()) + 5), self.p.n_positions)
        return work


class Prefetcher:
    """Plan items made `depth` ahead in a daemon thread; iterate to consume them in order."""

    def __init__(self, items, depth=4, pin=False):
        self.queue, self.stop = queue.Queue(maxsize=depth), threading.Event()
        self.thread = threading.Thread(target=self._produce, args=(items, pin), daemon=True)
        self.thread.start()

    def _produce(self, items, pin):
        try:
            for work in items:
                if pin and work.inputs:
                    work.inputs = {k: v.pin_memory() if isinstance(v, torch.Tensor) else v
                                   for k, v in work.inputs.items()}
                while not self.stop.is_set():
                    try:
                        self.queue.put(work, timeout=0.1)
                        break
                    except queue.Full:
                        pass
                if self.stop.is_set():
                    return
        except BaseException as e:  # raised again in the consumer
            self.queue.put(e)

    def __iter__(self):
        return self

    def __next__(self):
        work = self.queue.get()
        if isinstance(work, BaseException):
            raise work
        return work

    def close(self):
        self.stop.set()
        self.thread.join()
