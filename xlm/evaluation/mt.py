"""Translation evaluation under the original's names: `valid_en-fr_mt_ppl`, `valid_en-fr_mt_acc`
(teacher forcing) and with --eval_bleu `valid_en-fr_mt_bleu` (multi-bleu's tokenized BLEU), with the
original's reference and hypothesis files in <dump>/hypotheses/ (references written when a run starts)."""
import os
import time
from contextlib import nullcontext

import torch
import torch.nn.functional as F

from ..data.bpe import remove_bpe
from ..data.datasets import BatchingOptions, ParallelDataset
from ..data.loader import check_fits
from ..data.dictionary import UNK_WORD
from ..fileio import atomic_write
from ..model.linear import scoring_roundings
from ..model.generate import generate_beam, generate_greedy
from ..progress import Progress
from ..objectives.lm import clm_targets
from .bleu import reference_for_bleu, tokenized_bleu
from ..train.distributed import DistInfo, all_reduce_sum, broadcast_from_master, gather_to_master, own_share
from .lm import eval_subset, perplexity
from .memory import MemoryUsage


def mt_directions(params):
    """The evaluated directions: mt_steps, then the (l2, l3) of each bt step, without repeats."""
    directions = []
    for d in list(params.mt_steps) + [(l2, l3) for _, l2, l3 in params.bt_steps]:
        if d not in directions:
            directions.append(d)
    return directions


def _sentences(dico, ids):
    """ids as text; a reference's ids beyond a dictionary cut by --max_vocab or --min_count read as <unk>, as
    the model sees them (and the original writes them)."""
    n = len(dico)
    return " ".join(dico[i] if i < n else UNK_WORD for i in ids)


def _direction(data, params, split, src, tgt):
    """The pairs of one direction's evaluation, batched as the original's evaluator batches them, and the
    target side."""
    a, b = sorted((src, tgt))
    c_src, c_tgt = data.para[(a, b)][split]
    if (src, tgt) != (a, b):
        c_src, c_tgt = c_tgt, c_src
    dataset = ParallelDataset(c_src, c_tgt, BatchingOptions(batch_size=params.batch_size, group_by_size=True),
                              n_words=data.n_words, n_sentences=eval_subset(params, split, src)[1])
    return dataset, c_tgt


def check_evaluated_pairs(data, params):
    """A valid/test pair that the evaluation reads (in a TLM, CLM or MT direction: its first n sentences,
    less those with an empty side, as the original) and the model's positions cannot hold stops the run
    when it starts, not at the first evaluation; pairs that no step evaluates (PC's) go into the reference
    files alone, as text."""
    lm_pairs = [(l1, l2) for l1, l2 in params.clm_steps + params.mlm_steps if l2 is not None]
    for src, tgt in dict.fromkeys(lm_pairs + mt_directions(params)):
        for split in ("valid", "test"):
            dataset, _ = _direction(data, params, split, src, tgt)
            check_fits([dataset.corpus1, dataset.corpus2], dataset.indices, params.n_positions)


def _in_batch_order(dataset, batches):
    """The sentence indices in the order of the evaluation batches: the order of the original's files."""
    return [int(i) for key in batches for i in dataset.indices[key]]


def write_references(data, params, dump):
    """<dump>/hypotheses/ref.{src}-{tgt}.{split}.txt of both directions of every parallel pair loaded, as
    the original's evaluator writes them when a run starts (with or without --eval_bleu): the target
    sentences in the order of the evaluation batches, BPE removed. Hypothesis files come out in the same
    order, and scripts score translations against these."""
    hyp_dir = os.path.join(dump, "hypotheses")
    os.makedirs(hyp_dir, exist_ok=True)
    for a, b in data.para:
        for split in ("valid", "test"):
            for src, tgt in ((a, b), (b, a)):
                dataset, c_tgt = _direction(data, params, split, src, tgt)
                with atomic_write(os.path.join(hyp_dir, f"ref.{src}-{tgt}.{split}.txt"), "w") as f:
                    for i in _in_batch_order(dataset, dataset.batches(None)):
                        f.write(reference_for_bleu(_sentences(data.dico, c_tgt[i])) + "\n")


def bleu_hypotheses(decoder, enc, len1, longest, tgt, params):
    """The hypotheses of BLEU for a batch (token ids without the </s> at both ends), decoded as the original
    decodes them: greedy, or beam search with --beam_size > 1, up to 1.5 x the longest source (`longest`,
    read from the batch on the host, not from len1 on the device) + 10 tokens."""
    max_len = int(1.5 * longest + 10)
    if params.beam_size == 1:
        out, out_len = generate_greedy(decoder, enc, len1, params.lang2id[tgt], max_len=max_len)
    else:
        out, out_len = generate_beam(decoder, enc, len1, params.lang2id[tgt], params.beam_size,
                                     params.length_penalty, params.early_stopping, max_len)
    out, out_len = out.tolist(), out_len.tolist()  # one host read per batch
    return [row[1:n - 1] for row, n in zip(out, out_len)]


def bleu_of_shares(hyps, dataset, batches, c_tgt, dico, hyp_path, info):
    """BLEU of every rank's hypotheses ({sentence index: token ids}): rank 0 gathers them, writes them to
    hyp_path and scores them against c_tgt; every rank returns the score."""
    shares = gather_to_master(hyps, info)
    bleu = None
    if info.is_master:
        hyps = {i: h for share in shares for i, h in share.items()}
        # the original writes the sentences in the order of its batches (sorted by length)
        order = _in_batch_order(dataset, batches)
        refs = [reference_for_bleu(_sentences(dico, c_tgt[i])) for i in order]
        out = [remove_bpe(_sentences(dico, hyps[i])) for i in order]
        os.makedirs(os.path.dirname(hyp_path), exist_ok=True)
        with atomic_write(hyp_path, "w") as f:
            f.write("".join(h + "\n" for h in out))
        # the original reads the score that multi-bleu.perl prints, with two decimals: the best checkpoint
        # and the stopping criterion see no gain smaller than that
        bleu = float(f"{tokenized_bleu(out, refs):.2f}")
    return broadcast_from_master(bleu, info)


def score_pairs(encoder, decoder, s, t, src, tgt, params, usage, device, autocast):
    """Teacher-forced (sum of cross-entropy, predictions, correct predictions) of a batch of pairs (source s,
    target t), and with --eval_bleu its hypotheses (else None); the reads of the memories counted in `usage`
    (a MemoryUsage), if given."""
    x1, len1, x2, len2 = (v.to(device) for v in (s.x, s.lengths, t.x, t.lengths))
    hyps = None
    with autocast:
        # the encoder output of BLEU's translations has the original's roundings (see xlm/model/linear.py);
        # the rest of the scoring has evaluate_lm's
        with usage.reading(x1, len1) if usage else nullcontext(), \
                nullcontext() if params.eval_bleu else scoring_roundings(x1.device):
            enc = encoder(x1, len1, langs=params.lang2id[src])
        pred_mask, y = clm_targets(x2, len2)  # teacher forcing
        with usage.reading(x2, len2) if usage else nullcontext(), scoring_roundings(x2.device):
            # the memories' statistics count every position: the last layer computes them all
            h = decoder(x2, len2, langs=params.lang2id[tgt], causal=True, src_enc=enc, src_len=len1,
                        pred_mask=None if usage else pred_mask)
            h = h[pred_mask] if usage else h
            logits = decoder.get_scores(h).float()
        if params.eval_bleu:
            hyps = bleu_hypotheses(decoder, enc, len1, int(s.lengths.max()), tgt, params)
    return F.cross_entropy(logits, y, reduction="sum").item(), len(y), (logits.argmax(-1) == y).sum().item(), hyps


@torch.no_grad()
def evaluate_mt(encoder, decoder, data, params, info=DistInfo(), autocast=None, epoch=0, dump=".", log=None,
                check=None, splits=("valid", "test")):
    """Teacher-forced ppl / acc and, with --eval_bleu, BLEU of every direction on `splits`. Each
    rank of `info` takes batches i ≡ rank (mod world size), calling `check` before each (own_share); rank 0
    gathers the hypotheses, writes the files and scores BLEU, and every rank returns the same scores."""
    autocast = autocast or nullcontext()
    was_training = encoder.training
    encoder.eval(), decoder.eval()
    scores = {}
    for split in splits:
        for src, tgt in mt_directions(params):
            start = time.time()
            dataset, c_tgt = _direction(data, params, split, src, tgt)
            xe, n, correct, hyps = 0.0, 0, 0, {}
            batches = dataset.batches(None)
            usage = MemoryUsage({"encoder": encoder, "decoder": decoder}, info.device) if split == "valid" else None
            # decoding a large test set takes minutes: rank 0 shows how far its share is
            shown = f"{split}_{src}-{tgt}_mt BLEU" if params.eval_bleu and info.is_master else None
            with Progress(shown, len(range(info.rank, len(batches), info.world_size)), unit="batches") as progress:
                for key in own_share(batches, info, check):
                    s, t = dataset.collate(key)
                    b_xe, b_n, b_correct, b_hyps = score_pairs(encoder, decoder, s, t, src, tgt, params, usage,
                                                               info.device, autocast)
                    xe, n, correct = xe + b_xe, n + b_n, correct + b_correct
                    for i, hyp in zip(dataset.indices[key], b_hyps or []):
                        hyps[int(i)] = hyp
                    progress.update(1)
            name = f"{split}_{src}-{tgt}_mt"
            xe, n, correct = all_reduce_sum([xe, n, correct], info)
            scores[f"{name}_ppl"], scores[f"{name}_acc"] = perplexity(xe, max(n, 1)), 100.0 * correct / max(n, 1)
            if usage:
                scores.update(usage.scores(f"{split}_{src}-{tgt}", info))
            if params.eval_bleu:
                hyp_path = os.path.join(dump, "hypotheses", f"hyp{epoch}.{src}-{tgt}.{split}.txt")
                scores[f"{name}_bleu"] = bleu_of_shares(hyps, dataset, batches, c_tgt, data.dico, hyp_path, info)
            if log:
                log(f"Evaluated {name}: ppl {scores[f'{name}_ppl']:.2f}" +
                    (f", BLEU {scores[f'{name}_bleu']:.2f}" if params.eval_bleu else "") +
                    f" ({time.time() - start:.1f}s)")
    encoder.train(was_training), decoder.train(was_training)
    return scores
