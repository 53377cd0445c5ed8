"""Decoding with a key/value cache: greedy (or sampled) and beam search, with the original's rules.

Sentences start with </s> (XLM uses EOS as BOS) and decoding stops at </s> or at max_len, where
</s> is forced. Both functions take the encoder output `src_enc` (bs, src_len, dim) and return
(tokens (bs, length) with </s> at both ends and padding after, lengths (bs,)).
"""
import torch
import torch.nn.functional as F


def _step_scores(decoder, generated, lengths, tgt_lang_id, src_enc, src_len, cache):
    """Scores of the next token after each prefix `generated` (bs, cur_len)."""
    h = decoder(generated, lengths, langs=tgt_lang_id, causal=True, src_enc=src_enc, src_len=src_len, cache=cache)
    return decoder.get_scores(h[:, -1])


@torch.no_grad()
def generate_greedy(decoder, src_enc, src_len, tgt_lang_id, max_len=200, sample_temperature=None, use_cache=True):
    bs, device = len(src_len), src_len.device
    pad, eos = decoder.config.pad_index, decoder.config.eos_index
    generated = torch.full((bs, max_len), pad, dtype=torch.long, device=device)
    generated[:, 0] = eos
    gen_len = torch.ones(bs, dtype=torch.long, device=device)
    unfinished = torch.ones(bs, dtype=torch.bool, device=device)
    cache = {"slen": 0} if use_cache else None
    cur_len = 1
    while cur_len < max_len:
        scores = _step_scores(decoder, generated[:, :cur_len], gen_len, tgt_lang_id, src_enc, src_len, cache)
        if sample_temperature is None:
            next_words = scores.argmax(-1)
        else:
            next_words = torch.multinomial(F.softmax(scores.float() / sample_temperature, dim=-1), 1).squeeze(1)
        generated[:, cur_len] = torch.where(unfinished, next_words, pad)
        gen_len += unfinished
        unfinished &= next_words != eos
        cur_len += 1
        if not unfinished.any():
            break
    if cur_len == max_len:
        generated[:, -1].masked_fill_(unfinished, eos)
    return generated[:, :cur_len], gen_len


class BeamHypotheses:
    """The n best finished hypotheses of one sentence, scored sum_logprobs / len(hyp) ** length_penalty
    where len(hyp) counts the leading </s> and not the final one."""

    def __init__(self, n_hyp, max_len, length_penalty, early_stopping):
        self.max_len = max_len - 1
        self.n_hyp, self.length_penalty, self.early_stopping = n_hyp, length_penalty, early_stopping
        self.hyp = []
        self.worst_score = 1e9

    def __len__(self):
        return len(self.hyp)

    def add(self, hyp, sum_logprobs):
        score = sum_logprobs / len(hyp) ** self.length_penalty
        if len(self) < self.n_hyp or score > self.worst_score:
            self.hyp.append((score, hyp))
            if len(self) > self.n_hyp:
                ranked = sorted((s, i) for i, (s, _) in enumerate(self.hyp))
                del self.hyp[ranked[0][1]]
                self.worst_score = ranked[1][0]
            else:
                self.worst_score = min(score, self.worst_score)

    def is_done(self, best_sum_logprobs):
        """Full, and no running hypothesis can beat the worst kept one any more."""
        if len(self) < self.n_hyp:
            return False
        return self.early_stopping or self.worst_score >= best_sum_logprobs / self.max_len ** self.length_penalty


@torch.no_grad()
def generate_beam(decoder, src_enc, src_len, tgt_lang_id, beam_size, length_penalty=1.0, early_stopping=False,
                  max_len=200):
    bs, device = len(src_len), src_len.device
    pad, eos, n_words = decoder.config.pad_index, decoder.config.eos_index, decoder.config.n_words
    src_enc = src_enc.repeat_interleave(beam_size, dim=0)
    src_len = src_len.repeat_interleave(beam_size)
    generated = torch.full((bs * beam_size, max_len), pad, dtype=torch.long, device=device)
    generated[:, 0] = eos
    hyps = [BeamHypotheses(beam_size, max_len, length_penalty, early_stopping) for _ in range(bs)]
    # only the first beam of each sentence is alive at the start, so the beams do not repeat it
    beam_scores = torch.zeros(bs, beam_size, device=device)
    beam_scores[:, 1:] = -1e9
    beam_scores = beam_scores.view(-1)
    done = [False] * bs
    cache = {"slen": 0}
    cur_len = 1
    while cur_len < max_len:
        lengths = torch.full((bs * beam_size,), cur_len, dtype=torch.long, device=device)
        scores = F.log_softmax(_step_scores(decoder, generated[:, :cur_len], lengths, tgt_lang_id, src_enc,
                                            src_len, cache).float(), dim=-1)
        scores = (scores + beam_scores[:, None]).view(bs, beam_size * n_words)
        next_scores, next_words = torch.topk(scores, 2 * beam_size, dim=1)
        next_scores_l, next_words_l = next_scores.tolist(), next_words.tolist()
        next_batch = []  # (score, word, row of the batch it extends)
        for i in range(bs):
            done[i] = done[i] or hyps[i].is_done(max(next_scores_l[i]))
            if done[i]:
                next_batch += [(0.0, pad, 0)] * beam_size
                continue
            beam = []
            for idx, value in zip(next_words_l[i], next_scores_l[i]):
                row, word = i * beam_size + idx // n_words, idx % n_words
                if word == eos or cur_len + 1 == max_len:
                    hyps[i].add(generated[row, :cur_len].clone(), value)
                else:
                    beam.append((value, word, row))
                if len(beam) == beam_size:
                    break
            next_batch += beam or [(0.0, pad, 0)] * beam_size
        beam_scores = torch.tensor([s for s, _, _ in next_batch], device=device)
        rows = torch.tensor([r for _, _, r in next_batch], device=device)
        generated = generated[rows]
        generated[:, cur_len] = torch.tensor([w for _, w, _ in next_batch], device=device)
        for key in cache:
            if key != "slen" and key[0] == "self":  # the encoder's keys/values are the same in every beam
                cache[key] = (cache[key][0][rows], cache[key][1][rows])
        cur_len += 1
        if all(done):
            break
    best = [max(h.hyp, key=lambda sh: sh[0])[1] for h in hyps]
    tgt_len = torch.tensor([len(b) + 1 for b in best], device=device)
    decoded = torch.full((bs, int(tgt_len.max())), pad, dtype=torch.long, device=device)
    for i, hyp in enumerate(best):
        decoded[i, :len(hyp)] = hyp
        decoded[i, len(hyp)] = eos
    return decoded, tgt_len
