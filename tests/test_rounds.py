"""Which objective steps a training round runs, against the original's rule written out
(`shuf_order` in the original's xlm/utils.py): per round and objective, min(5, #monolingual) draws
among the monolingual steps, then min(5, #pairs) among the pairs, with replacement; uniform, or with
--lg_sampling_factor a, p_l proportional to n_l ** a within each group."""
from collections import Counter

import numpy as np
import pytest

from xlm.train.pipeline import sample_round

XNLI15 = "ar bg de el en es fr hi ru sw th tr ur vi zh".split()
MLM_STEPS = [(lg, None) for lg in XNLI15] + [p for lg in XNLI15 if lg != "en" for p in (("en", lg), (lg, "en"))]


def expected_per_round(steps, sizes, alpha):
    mono = [s for s in steps if s[1] is None]
    para = [s for s in steps if s[1] is not None]
    expected = {}
    for group in (mono, para):
        weights = [1.0 if alpha == -1 else sizes[s] ** alpha for s in group]
        for s, w in zip(group, weights):
            expected[s] = min(5, len(group)) * w / sum(weights)
    return expected


def check_frequencies(steps, sizes, alpha, rounds=4000):
    rng = np.random.default_rng(0)
    counts, n_mono = Counter(), len([s for s in steps if s[1] is None])
    for _ in range(rounds):
        drawn = sample_round(steps, sizes, alpha, rng)
        k = min(5, n_mono)
        # monolingual steps first, then pairs; a round always has the same number of each
        assert all(s[1] is None for s in drawn[:k]) and all(s[1] is not None for s in drawn[k:])
        assert len(drawn) == k + min(5, len(steps) - n_mono)
        counts.update(drawn)
    for step, mean in expected_per_round(steps, sizes, alpha).items():
        sd = np.sqrt(rounds * mean * (1 - mean / min(5, len(steps))))
        assert abs(counts[step] - rounds * mean) < 5 * sd + 1, (step, counts[step], rounds * mean)


def test_xnli15_rounds_uniform():
    """The README's XNLI-15 command: 15 MLM + 28 TLM steps give 5 + 5 steps a round, not 43."""
    check_frequencies(MLM_STEPS, {}, -1)


@pytest.mark.parametrize("alpha", [0.5, 0.7])
def test_rounds_sampled_by_size(alpha):
    rng = np.random.default_rng(1)
    sizes = {s: int(rng.integers(1_000, 1_000_000)) for s in MLM_STEPS}
    check_frequencies(MLM_STEPS, sizes, alpha)


def test_a_large_sampling_factor_draws_the_largest_corpus():
    """--lg_sampling_factor 1000: sizes ** 1000 overflowed (NaN probabilities, a traceback at the first
    round); the shares are those of the limit, all draws from the largest."""
    rng = np.random.default_rng(0)
    steps, sizes = [("en", None), ("fr", None), ("de", None)], {("en", None): 5000, ("fr", None): 4000,
                                                                ("de", None): 3000}
    assert {s for _ in range(50) for s in sample_round(steps, sizes, 1000, rng)} == {("en", None)}


def test_few_steps_draw_with_replacement():
    """--mlm_steps en,fr: two draws a round, so some rounds run en twice and fr never, as the original."""
    rng = np.random.default_rng(0)
    rounds = [tuple(sample_round([("en", None), ("fr", None)], {}, -1, rng)) for _ in range(400)]
    assert all(len(r) == 2 for r in rounds)
    twice = sum(r[0] == r[1] for r in rounds) / len(rounds)
    assert 0.4 < twice < 0.6
    assert sample_round([], {}, -1, rng) == []
    check_frequencies([("en", "fr"), ("fr", "en")], {}, -1)
