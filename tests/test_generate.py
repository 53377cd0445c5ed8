import itertools

import pytest
import torch
import torch.nn.functional as F

from conftest import train_reverser
from xlm.model.generate import generate_beam, generate_greedy
from xlm.model.transformer import TransformerConfig, TransformerModel

N_WORDS = 12  # 0..3 special, 4..11 "letters"


def model_pair(n_words=N_WORDS, seed=0):
    torch.manual_seed(seed)
    kw = dict(n_words=n_words, emb_dim=32, n_layers=2, n_heads=4, n_langs=2)
    return (TransformerModel(TransformerConfig(**kw)),
            TransformerModel(TransformerConfig(**kw, is_decoder=True)))


def batch(seqs):
    lengths = torch.tensor([len(s) + 2 for s in seqs])
    x = torch.full((len(seqs), int(lengths.max())), 2)
    for i, s in enumerate(seqs):
        x[i, :len(s) + 2] = torch.tensor([1] + s + [1])
    return x, lengths


@pytest.fixture(scope="module")
def reverser():
    return train_reverser(N_WORDS)


def encode(enc, seqs):
    x, xl = batch(seqs)
    return enc(x, xl, langs=0), xl


SOURCES = [[4, 5, 6], [7, 8, 9, 10, 11], [5], [11, 4, 4, 6], [9, 8]]


def test_the_trained_model_reverses(reverser):
    enc, dec = reverser
    out, lengths = generate_greedy(dec, *encode(enc, SOURCES), tgt_lang_id=1, max_len=12)
    decoded = [out[i, 1:lengths[i] - 1].tolist() for i in range(len(SOURCES))]
    assert sum(d == s[::-1] for d, s in zip(decoded, SOURCES)) >= 4
    assert len(set(lengths.tolist())) > 1


def test_cached_and_uncached_decoding_agree(reverser):
    enc, dec = reverser
    src = encode(enc, SOURCES)
    cached = generate_greedy(dec, *src, tgt_lang_id=1, max_len=12)
    uncached = generate_greedy(dec, *src, tgt_lang_id=1, max_len=12, use_cache=False)
    assert torch.equal(cached[0], uncached[0]) and torch.equal(cached[1], uncached[1])


def test_beam_of_one_is_greedy(reverser):
    enc, dec = reverser
    src = encode(enc, SOURCES)
    greedy = generate_greedy(dec, *src, tgt_lang_id=1, max_len=12)
    beam = generate_beam(dec, *src, tgt_lang_id=1, beam_size=1, max_len=12)
    assert torch.equal(greedy[0], beam[0]) and torch.equal(greedy[1], beam[1])


@pytest.mark.parametrize("generate", ["greedy", "beam"])
def test_batched_equals_one_sentence_at_a_time(reverser, generate):
    enc, dec = reverser

    def run(seqs):
        src = encode(enc, seqs)
        if generate == "greedy":
            out, lengths = generate_greedy(dec, *src, tgt_lang_id=1, max_len=12)
        else:
            out, lengths = generate_beam(dec, *src, tgt_lang_id=1, beam_size=3, length_penalty=0.8, max_len=12)
        return [out[i, :lengths[i]].tolist() for i in range(len(seqs))]

    assert run(SOURCES) == [run([s])[0] for s in SOURCES]


def finished_hypotheses(dec, src_enc, src_len, n_words, max_len):
    """Every hypothesis beam search can finish, as (output words, k, sum of log-probabilities), scored
    by teacher forcing in one batch. A hypothesis ends with </s> (kept out of the output) or is cut at
    max_len, where the last generated word counts in the score but not in the output (the original's rule)."""
    candidates = [list(w) for k in range(1, max_len) for w in itertools.product(range(n_words), repeat=k)
                  if 1 not in w[:-1] and (w[-1] == 1 or k == max_len - 1)]
    y = torch.full((len(candidates), max_len), 2)
    for i, words in enumerate(candidates):
        y[i, :len(words) + 1] = torch.tensor([1] + words)
    lengths = torch.tensor([len(w) + 1 for w in candidates])
    h = dec(y, lengths, langs=1, causal=True, src_enc=src_enc.expand(len(candidates), -1, -1),
            src_len=src_len.expand(len(candidates)))
    logp = F.log_softmax(dec.get_scores(h).float(), dim=-1)
    return [(words[:-1], len(words), sum(logp[i, t, w].item() for t, w in enumerate(words)))
            for i, words in enumerate(candidates)]


@torch.no_grad()
def test_exhaustive_beam_finds_the_best_hypothesis():
    """A random tiny model over 6 words: with a beam as wide as every prefix, beam search is
    exhaustive, so it must return the best of all hypotheses scored by the same rule."""
    n_words, max_len = 6, 5
    enc, dec = model_pair(n_words, seed=3)
    enc.eval(), dec.eval()
    for src_tokens in ([4, 5], [5, 4, 4]):
        src_enc, src_len = encode(enc, [src_tokens])
        hypotheses = finished_hypotheses(dec, src_enc, src_len, n_words, max_len)
        for length_penalty in (0.5, 1.0, 2.0):
            best = max(hypotheses, key=lambda h: h[2] / h[1] ** length_penalty)[0]
            out, lengths = generate_beam(dec, src_enc, src_len, 1, beam_size=n_words ** 3,
                                         length_penalty=length_penalty, max_len=max_len)
            assert out[0, :lengths[0]].tolist() == [1] + best + [1]
