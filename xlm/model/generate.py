"""Decoding with a key/value cache: greedy and beam search, with the original's rules.

Sentences start with </s> (XLM uses EOS as BOS) and decoding stops at </s> or at max_len, where
</s> is forced; max_len is the original's (callers compute it from the source lengths as it does), and
decoding stops at the latest one past the model's positions (`decoding_length`). Both functions take
the encoder output `src_enc` (bs, src_len, dim) and return (tokens (bs, length) with </s> at both ends
and padding after, lengths (bs,)).

All bookkeeping stays on the device: the host reads a device value only after a few of the steps
(`syncs_after`: to stop once every sentence is finished) and once at the end (to trim the output).
Steps run after the last sentence finished change nothing in the output. The decoder computes one
position per step, from the keys and values it keeps (`TransformerModel.step`), with the original's
operations on the original's shapes, and the outputs are the original's bit for bit. The original
computes every row of the batch at every step, finished or not; on the CPU, where reading which are
finished costs nothing, the finished sentences are left out (`still_decoded`) as far as the roundings
of a matmul, which depend on its number of rows, stay the same (`rows_may_change`).
"""
import torch

from .linear import in_free_roundings, matmul_shapes, rows_may_change, weights_packed
from .transformer import compute_dtype, reads_on_host

SYNC_EVERY = 8  # where a host read waits for the device


def decoding_length(decoder, max_len):
    """How far decoding runs: max_len, but at most one past the model's positions, where </s> is forced
    (an output, never an input). The original runs to max_len, and fails reading position n_positions
    should a sentence still be unfinished there: wherever it does not fail, the outputs are the same."""
    return min(max_len, decoder.config.n_positions + 1)


def syncs_after(steps, sync_every):
    """Whether the host reads after this many decoding steps: every sync_every steps, and after 1, 2, 4,
    ... below that, since a model early in training ends every sentence within a few tokens (the
    original reads after every step). On the CPU, where a read costs nothing, sync_every is 1."""
    return steps % sync_every == 0 or (steps < sync_every and steps & (steps - 1) == 0)


def host_read_interval(device, sync_every):
    if sync_every is not None:
        return sync_every
    return 1 if reads_on_host(device) else SYNC_EVERY


def still_decoded(finished, group, dtype, shapes):
    """The sentences to decode from here on (their indices, in order), of those decoded so far, given which
    are finished (finished (n,), on the CPU), each `group` rows (its beams); or None for all of them.
    The unfinished ones, and as few finished ones as make a number of rows that rounds as the present
    number does through linear layers of these shapes (`rows_may_change`)."""
    n, left = len(finished), (~finished).nonzero().squeeze(1)
    keep = next((k for k in range(len(left), n) if rows_may_change(n * group, k * group, dtype, shapes)), n)
    if keep == n:
        return None
    return torch.cat([left, finished.nonzero().squeeze(1)[:keep - len(left)]]).sort().values


TOPK_BLOCK = 128  # scores per block of `topk_rows` (64-512 measured, this the fastest)
# up to these many scores a thread, torch's own topk / argmax: the blocks' dozen small calls cost a fixed
# 125 us (`topk_rows`) or 55 us (`argmax_rows`) on a Zen 3, more than torch's scan of so few scores
TOPK_DIRECT_SCORES, ARGMAX_DIRECT_SCORES = 100_000, 50_000


def few_scores(scores, per_thread):
    """Whether torch's own call over the rows of scores (n, width), spread over the threads row by row,
    reads at most `per_thread` scores a thread."""
    n, width = scores.shape
    return n * width <= per_thread * min(torch.get_num_threads(), max(n, 1))


def block_maxima(scores):
    """The maximum of each block of TOPK_BLOCK scores of each row (n, width), the last block shorter."""
    n, width = scores.shape
    full = width // TOPK_BLOCK * TOPK_BLOCK
    maxima = scores[:, :full].view(n, full // TOPK_BLOCK, TOPK_BLOCK).amax(2)
    if full < width:
        maxima = torch.cat([maxima, scores[:, full:].amax(1, keepdim=True)], 1)
    return maxima


def topk_rows(scores, k):
    """torch.topk(scores, k, dim=1): the k largest of each row, largest first, and their indices. On the
    CPU by way of the maxima of blocks of TOPK_BLOCK scores: every score outside the k blocks with the
    largest maxima is at most the (k+1)-th maximum, so where the k best scores of those blocks are all
    different and beat it and the rest of those blocks, they are the answer, whatever the order of the
    search; otherwise (equal scores, NaN) torch.topk answers, which breaks ties its own way. A beam step
    of a trained 2 x 128 model (32 sentences, 5 x 8,054 scores each) took 250 us instead of 720. Few
    scores (`few_scores`) go to torch.topk at once."""
    n, width = scores.shape
    block = TOPK_BLOCK
    if not scores.is_cpu or -(-width // block) <= k or few_scores(scores, TOPK_DIRECT_SCORES):
        return torch.topk(scores, k, dim=1)
    block_max, best_blocks = block_maxima(scores).topk(k + 1, dim=1)
    index = (best_blocks[:, :k, None] * block + torch.arange(block)).view(n, k * block)
    candidates = scores.gather(1, index.clamp(max=width - 1)).masked_fill_(index >= width, -float("inf"))
    values, at = candidates.topk(k + 1, dim=1)
    beaten = torch.maximum(values[:, k], block_max[:, k])
    if not bool((values[:, :k - 1] > values[:, 1:k]).all() & (values[:, k - 1] > beaten).all()):
        return torch.topk(scores, k, dim=1)
    return values[:, :k], index.gather(1, at[:, :k])


def argmax_rows(scores):
    """scores.argmax(1), the first of each row's largest (NaN the largest), found on the CPU among the
    scores of the block whose maximum comes first among the largest (blocks of TOPK_BLOCK): torch's argmax
    along rows takes a slow loop, 140 us for 32 rows of 8,000 scores against 46 us this way. Few scores
    (`few_scores`) go to argmax at once."""
    width, block = scores.shape[1], TOPK_BLOCK
    if not scores.is_cpu or width < block or few_scores(scores, ARGMAX_DIRECT_SCORES):
        return scores.argmax(1)
    index = block_maxima(scores).argmax(1, keepdim=True) * block + torch.arange(block)
    # past the last score: the last one again, which argmax finds first at its own place
    best = scores.gather(1, index.clamp_(max=width - 1)).argmax(1, keepdim=True)
    return index.gather(1, best).squeeze(1)


@torch.no_grad()
@weights_packed()
def generate_greedy(decoder, src_enc, src_len, tgt_lang_id, max_len=200, use_cache=True, sync_every=None):
    bs, device = len(src_len), src_len.device
    sync_every = host_read_interval(device, sync_every)
    max_len = decoding_length(decoder, max_len)
    pad, eos = decoder.config.pad_index, decoder.config.eos_index
    generated = torch.full((bs, max_len), pad, dtype=torch.long, device=device)
    generated[:, 0] = eos
    gen_len = torch.ones(bs, dtype=torch.long, device=device)
    unfinished = torch.ones(bs, dtype=torch.bool, device=device)
    state = decoder.start_decoding(src_enc, src_len, max_len) if use_cache else None
    drops_rows = use_cache and reads_on_host(device)
    dtype, shapes = compute_dtype(src_enc), matmul_shapes(decoder)
    live = slice(None)  # the rows decoded: all, or their indices once some are left out (`still_decoded`)
    cur_len = 1
    while cur_len < max_len:
        if use_cache:
            h = decoder.step(generated[live, cur_len - 1], tgt_lang_id, state)
        else:
            h = decoder(generated[:, :cur_len], gen_len, langs=tgt_lang_id, causal=True, src_enc=src_enc,
                        src_len=src_len)[:, -1]
        scores = decoder.get_scores(h)
        # topk: the original's pick among equal scores
        next_words = argmax_rows(scores) if in_free_roundings() else topk_rows(scores, 1)[1].squeeze(1)
        going_on = unfinished[live]
        generated[live, cur_len] = torch.where(going_on, next_words, pad)
        gen_len[live] += going_on
        unfinished[live] = going_on & (next_words != eos)
        cur_len += 1
        if syncs_after(cur_len - 1, sync_every):
            if not unfinished.any():
                break
            kept = still_decoded(~unfinished[live], 1, dtype, shapes) if drops_rows else None
            if kept is not None:
                live = torch.arange(bs, device=device)[live][kept]
                state.reorder(kept)
    generated[:, -1] = torch.where(unfinished, eos, generated[:, -1])  # still unfinished at max_len
    return generated[:, :int(gen_len.max())], gen_len


class BeamHypotheses:
    """The n best finished hypotheses of each sentence of a batch, on the device, scored
    sum_logprobs / len(hyp) ** length_penalty where len(hyp) counts the leading </s> and not the final one.

    The original keeps a list per sentence, adds a hypothesis when the list has fewer than n or it beats the
    worst kept one (dropping the worst), and returns the first-added of the best. That is: the kept scores
    are the n largest offered, and the answer is the earliest offered among the best. Here the n slots are
    sorted by score, older hypotheses first among equal scores (a stable sort with the old slots first), so
    slot 0 is the answer and slot n-1 the worst.
    """

    def __init__(self, bs, n_hyp, max_len, length_penalty, early_stopping, pad_index, device, steps):
        """max_len: the original's, which the test of `update_done` takes; steps: the hypotheses' length, the
        positions decoded (`decoding_length`)."""
        self.n_hyp, self.early_stopping = n_hyp, early_stopping
        # len ** length_penalty and (max_len - 1) ** length_penalty as Python computes them, as the original does
        self.len_penalty = torch.tensor([0.0] + [float(n) ** length_penalty for n in range(1, steps)],
                                        dtype=torch.float64, device=device)
        self.max_len_penalty = float(max_len - 1) ** length_penalty
        self.scores = torch.full((bs, n_hyp), -float("inf"), dtype=torch.float64, device=device)
        self.tokens = torch.full((bs, n_hyp, steps), pad_index, dtype=torch.long, device=device)
        self.lengths = torch.zeros(bs, n_hyp, dtype=torch.long, device=device)
        self.count = torch.zeros(bs, dtype=torch.long, device=device)
        self.done = torch.zeros(bs, dtype=torch.bool, device=device)

    def update_done(self, best_sum_logprobs):
        """A sentence is done once it is full and no running hypothesis can beat its worst kept one."""
        full = self.count >= self.n_hyp
        if not self.early_stopping:
            full &= self.scores[:, -1] >= best_sum_logprobs.double() / self.max_len_penalty
        self.done |= full

    def add(self, tokens, sum_logprobs, length, offered):
        """Offer the hypotheses tokens (bs, k, max_len) of `length` tokens where `offered` (bs, k), in order."""
        new_scores = torch.where(offered, sum_logprobs.double() / self.len_penalty[length], -float("inf"))
        scores = torch.cat([self.scores, new_scores], dim=1)
        keep = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :self.n_hyp]
        self.scores = scores.gather(1, keep)
        tokens = torch.cat([self.tokens, tokens], dim=1)
        self.tokens = tokens.gather(1, keep[:, :, None].expand(-1, -1, tokens.shape[2]))
        lengths = torch.cat([self.lengths, torch.full_like(new_scores, length, dtype=torch.long)], dim=1)
        self.lengths = lengths.gather(1, keep)
        self.count = torch.clamp(self.count + offered.sum(1), max=self.n_hyp)

    def select(self, sentences):
        """Keep these sentences alone (indices, in order)."""
        for name in ("scores", "tokens", "lengths", "count", "done"):
            setattr(self, name, getattr(self, name)[sentences])

    def best(self, eos_index):
        """The best hypothesis of each sentence followed by </s> (bs, max_len), and its length."""
        bs = len(self.tokens)
        decoded, length = self.tokens[:, 0].clone(), self.lengths[:, 0] + 1
        decoded[torch.arange(bs, device=decoded.device), length - 1] = eos_index
        return decoded, length


@torch.no_grad()
@weights_packed()
def generate_beam(decoder, src_enc, src_len, tgt_lang_id, beam_size, length_penalty=1.0, early_stopping=False,
                  max_len=200, sync_every=None):
    bs, device = len(src_len), src_len.device
    sync_every = host_read_interval(device, sync_every)
    pad, eos, n_words = decoder.config.pad_index, decoder.config.eos_index, decoder.config.n_words
    steps = decoding_length(decoder, max_len)
    hyps = BeamHypotheses(bs, beam_size, max_len, length_penalty, early_stopping, pad, device, steps)
    max_len = steps  # the original's value is the stopping test's alone
    generated = torch.full((bs * beam_size, max_len), pad, dtype=torch.long, device=device)
    generated[:, 0] = eos
    # only the first beam of each sentence is alive at the start, so the beams do not repeat it
    beam_scores = torch.zeros(bs, beam_size, device=device)
    beam_scores[:, 1:] = -1e9
    beam_scores = beam_scores.view(-1)
    candidate_rank = torch.arange(2 * beam_size, 0, -1, device=device)
    state = decoder.start_decoding(src_enc, src_len, max_len, group=beam_size)
    buffer = torch.empty(bs * beam_size, n_words, device=device)
    drops_rows = reads_on_host(device)
    dtype, shapes = compute_dtype(src_enc), matmul_shapes(decoder)
    searched = torch.arange(bs, device=device)  # the sentences searched (see `still_decoded`)
    decoded = torch.full((bs, max_len), pad, dtype=torch.long, device=device)
    length = torch.zeros(bs, dtype=torch.long, device=device)
    first_row = torch.arange(0, bs * beam_size, beam_size, device=device)[:, None]
    cur_len = 1
    while cur_len < max_len:
        n = len(searched)
        h = decoder.step(generated[:, cur_len - 1], tgt_lang_id, state)
        # in place, in one buffer: the same values as the original's log_softmax(logits) + beam_scores
        logits = decoder.get_scores(h, out=buffer[:len(h)]).float()
        scores = torch.log_softmax(logits, dim=-1, out=logits).add_(beam_scores[:, None]).view(n, beam_size * n_words)
        next_scores, next_words = topk_rows(scores, 2 * beam_size)  # (n, 2 * beam_size), best first
        rows, words = first_row + next_words // n_words, next_words % n_words
        hyps.update_done(next_scores[:, 0])
        last = cur_len + 1 == max_len
        continues = torch.zeros_like(words, dtype=torch.bool) if last else words != eos
        # candidates are taken best first until beam_size of them continue; the others finish, if taken
        n_continuing = continues.cumsum(1)
        taken = (n_continuing - continues.long() < beam_size) & ~hyps.done[:, None]
        hyps.add(generated[rows.view(-1)].view(n, 2 * beam_size, max_len), next_scores, cur_len, taken & ~continues)
        if last:
            break
        # the first beam_size continuing candidates, in order (the highest ranks)
        beam = torch.topk(candidate_rank * (continues & (n_continuing <= beam_size)), beam_size, dim=1).indices
        beam_scores = next_scores.gather(1, beam).view(-1)
        rows = rows.gather(1, beam).view(-1)
        generated = generated[rows]
        generated[:, cur_len] = words.gather(1, beam).view(-1)
        state.reorder(rows)
        cur_len += 1
        if syncs_after(cur_len - 1, sync_every):
            if hyps.done.all():
                break
            kept = still_decoded(hyps.done, beam_size, dtype, shapes) if drops_rows else None
            if kept is not None:  # the others are done: their answers are final
                gone = torch.ones(n, dtype=torch.bool, device=device).index_fill_(0, kept, False)
                best, best_length = hyps.best(eos)
                decoded[searched[gone]], length[searched[gone]] = best[gone], best_length[gone]
                searched = searched[kept]
                hyps.select(kept)
                first_row = first_row[:len(kept)]
                rows = (kept[:, None] * beam_size + torch.arange(beam_size, device=device)).flatten()
                generated, beam_scores = generated[rows], beam_scores[rows]
                state.reorder(rows)
    decoded[searched], length[searched] = hyps.best(eos)
    return decoded[:, :int(length.max())], length
