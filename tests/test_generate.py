import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from conftest import train_reverser
import xlm.model.generate as generate_module
import xlm.model.linear as linear_module
import xlm.model.attention as attention_module
from xlm.model.generate import SYNC_EVERY, argmax_rows, generate_beam, generate_greedy, syncs_after, topk_rows
from xlm.model.linear import free_roundings, matmul_shapes, row_roundings, rows_may_change, small_rows
from xlm.model.transformer import Packing, TransformerConfig, TransformerModel

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


@torch.no_grad()
def test_free_roundings_take_the_faster_kernels(reverser, monkeypatch):
    """Inside `free_roundings` (back-translation's generation, evaluation's scores) GELU is F.gelu, attention
    over whole sequences F.scaled_dot_product_attention, greedy decoding picks with argmax, the source's
    keys are not copied, and a decoding step computes its queries, keys and values in one matmul (outside,
    the original's erf form, operations, topk, layout and three matmuls); translations as outside here."""
    torch.manual_seed(4)
    config = TransformerConfig(n_words=N_WORDS, emb_dim=32, n_layers=1, n_heads=4, gelu_activation=True)
    model = TransformerModel(config).eval()
    ffn, h = model.ffns[0], torch.randn(5, 32)
    lin1 = ffn.lin1(h)
    with free_roundings():
        assert torch.equal(ffn(h), ffn.lin2(F.gelu(lin1)))
    assert torch.equal(ffn(h), ffn.lin2(0.5 * lin1 * (1 + torch.erf(lin1 / math.sqrt(2)))))
    q, k, v = torch.randn(3, 2, 4, 6, 8).unbind(0)
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])[:, None, None, :]
    fused = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    with free_roundings():
        assert torch.equal(model.attentions[0]._attention(q, k, v, mask, False), fused)
    assert torch.equal(model.attentions[0]._attention(q, k, v, mask, False),
                       attention_module.original_attention(q, k, v, mask, False))
    enc, dec = reverser
    src = encode(enc, SOURCES)
    assert dec.encoder_attn[0].source_keys_values(src[0])[0].is_contiguous()  # the original's layout
    with free_roundings():  # the keys read in place, also once finished sentences are left out
        assert not dec.encoder_attn[0].source_keys_values(src[0])[0].is_contiguous()
        state = dec.start_decoding(*src, max_len=12)
        dec.step(torch.ones(len(SOURCES), dtype=torch.long), 1, state)
        keys_t = state.source[0][0]
        state.reorder(torch.tensor([1, 3]))
        heads = torch.tensor([1, 3])[:, None] * dec.config.n_heads + torch.arange(dec.config.n_heads)
        assert not state.source[0][0].is_contiguous() and torch.equal(state.source[0][0], keys_t[heads.flatten()])
    exact = generate_greedy(dec, *src, tgt_lang_id=1, max_len=12)
    assert dec.start_decoding(*src, max_len=12).projections is None
    monkeypatch.setattr(torch, "topk", lambda *a, **k: pytest.fail("topk called inside free_roundings"))
    for attention in dec.attentions:  # the queries, keys and values of a step in one matmul
        for lin in (attention.q_lin, attention.k_lin, attention.v_lin):
            monkeypatch.setattr(lin, "forward", lambda *a: pytest.fail("q/k/v maps called one by one"))
    with free_roundings():
        free = generate_greedy(dec, *src, tgt_lang_id=1, max_len=12)
    assert torch.equal(exact[0], free[0]) and torch.equal(exact[1], free[1])


def test_side_by_side_maps_are_not_cast_again_at_each_step(reverser, monkeypatch):
    """Under autocast (bf16 back-translation) a decoding step's q/k/v weights side by side are made in the
    steps' dtype once a decoding: autocast caches its casts of trained weights only, and cast these (not
    trained) again at every step and layer. The translations are those of autocast's casts."""
    enc, dec = reverser

    class Casts(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.shapes = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten._to_copy.default and (kwargs or {}).get("dtype") == torch.bfloat16:
                self.shapes.append(tuple(args[0].shape))
            return func(*args, **(kwargs or {}))

    def translate():
        with torch.autocast("cpu", dtype=torch.bfloat16), free_roundings():
            src = encode(enc, SOURCES)
            with Casts() as casts:
                out = generate_greedy(dec, *src, tgt_lang_id=1, max_len=12)
        return out, casts.shapes.count((3 * dec.config.emb_dim, dec.config.emb_dim))

    (out, lengths), casts = translate()
    assert lengths.max() > 5 and casts == dec.config.n_layers
    side_by_side = type(dec.attentions[0]).side_by_side
    monkeypatch.setattr(type(dec.attentions[0]), "side_by_side", lambda a, dtype: side_by_side(a, torch.float32))
    (cast_by_autocast, _), casts = translate()
    assert casts > 5 * dec.config.n_layers and torch.equal(cast_by_autocast, out)


def encode(enc, seqs):
    x, xl = batch(seqs)
    return enc(x, xl, langs=0), xl


SOURCES = [[4, 5, 6], [7, 8, 9, 10, 11], [5], [11, 4, 4, 6], [9, 8]]


@torch.no_grad()
@pytest.mark.parametrize("by_layer", [True, False])
def test_a_reorder_is_copied_layer_by_layer_before_each_layer_reads_it(reverser, monkeypatch, by_layer):
    """On the CPU a beam reorder (or finished sentences left out) moves each layer's keys and values at
    the next step, just before that layer's attention reads them (moved all at once, the first layers' had
    left the cache by then: beam 5 spent 1.5 times the original's time in the self-attention's matmuls);
    on a GPU (by_layer False) all at once, before the first layer."""
    enc, dec = reverser
    src = encode(enc, SOURCES)
    state, words = dec.start_decoding(*src, max_len=12), torch.tensor([4, 5, 6, 7, 8])
    assert state.reorder_by_layer
    state.reorder_by_layer = by_layer
    dec.step(words, 1, state)
    dec.step(words, 1, state)
    before, rows = state.kv[:, :, :, :2].clone(), torch.tensor([3, 3, 0, 4])
    events, index_select = [], torch.index_select
    monkeypatch.setattr(torch, "index_select", lambda *a, **k: events.append("copy") or index_select(*a, **k))
    for i, attention in enumerate(dec.attentions):
        def step(x, keys, values, t, qkv, i=i, step=attention.step):
            moved = all(torch.equal(kv[:, :, :2], before[2 * i + j, rows]) for j, kv in enumerate((keys, values)))
            events.append(f"attention {i}" if moved else "attention over unmoved keys")
            return step(x, keys, values, t, qkv)
        monkeypatch.setattr(attention, "step", step)
    state.reorder(rows)
    assert events == []
    dec.step(words[rows], 1, state)
    # by layer: the keys, then the values, each along its first dimension (torch copies it on every thread)
    assert events == (["copy", "copy", "attention 0", "copy", "copy", "attention 1"] if by_layer else
                      ["copy", "attention 0", "attention 1"])
    assert torch.equal(state.kv[:, :, :, :2], before[:, rows])


@pytest.mark.parametrize("width", [7, 128, 130, 1000, 5 * 8054])
@pytest.mark.parametrize("k", [1, 2, 10])
def test_topk_rows_is_torch_topk(width, k, monkeypatch):
    """Beam search's top-k through the blocks' maxima: torch.topk's values and indices, where the k best
    are all different and beat the rest; elsewhere (equal scores, which torch.topk orders its own way,
    NaN) torch.topk itself answers."""
    monkeypatch.setattr(generate_module, "TOPK_DIRECT_SCORES", 0)  # these few scores go through the blocks
    g, block = torch.Generator().manual_seed(width + k), generate_module.TOPK_BLOCK
    distinct = torch.randn(6, width, generator=g)
    beam_like = torch.log_softmax(3 * torch.randn(6, width, generator=g), -1)
    beam_like[:, width // 5:] -= 1e9  # the first step: the beams after the first at -1e9
    ties = torch.randint(-3, 3, (6, width), generator=g).float()
    infinite, last_block = distinct.clone(), distinct.clone()
    infinite[0], infinite[1, 3:] = -float("inf"), -float("inf")
    last_block[:, -1] = 10  # the best in the last, shorter block
    nan, equal_best, kth_twice = distinct.clone(), distinct.clone(), distinct.clone()
    nan[2, width // 2] = float("nan")
    equal_best[:, 0] = equal_best[:, -1] = 10
    if width >= (k + 1) * block:  # the k-th best also the best of the (k+1)-th block
        kth_twice[:, :(k + 1) * block:block] = torch.cat([torch.arange(10.0 + k - 1, 9.0, -1), torch.tensor([10.0])])
    blocks_answer = -(-width // block) > k
    empty = distinct[:0]
    cases = {"distinct": blocks_answer, "beam_like": blocks_answer, "last_block": blocks_answer, "empty": False,
             "ties": False, "infinite": False, "nan": False, "equal_best": False, "kth_twice": False}
    whole_rows, topk = [], torch.topk
    monkeypatch.setattr(torch, "topk", lambda x, *a, **kw: whole_rows.append(x.shape[1] == width) or topk(x, *a, **kw))
    for name, blocks in cases.items():
        scores = locals()[name]
        if width < k or (name == "kth_twice" and width < (k + 1) * block):
            continue
        whole_rows.clear()
        (values, indices), expected = topk_rows(scores, k), topk(scores, k, dim=1)
        torch.testing.assert_close(values, expected.values, rtol=0, atol=0, equal_nan=True, msg=name)
        assert torch.equal(indices, expected.indices), name
        assert any(whole_rows) != blocks, name  # which way answered


@pytest.mark.parametrize("width", [7, 128, 130, 1000, 8054])
def test_argmax_rows_is_argmax(width, monkeypatch):
    """Greedy decoding's pick inside `free_roundings`, through the blocks' maxima: torch's argmax, the
    first of equal scores, NaN before all."""
    monkeypatch.setattr(generate_module, "ARGMAX_DIRECT_SCORES", 0)  # these few scores go through the blocks
    g = torch.Generator().manual_seed(width)
    distinct = torch.randn(6, width, generator=g)
    ties = torch.randint(-3, 3, (6, width), generator=g).float()
    infinite, last, nan, first_and_last = (distinct.clone() for _ in range(4))
    infinite[0], infinite[1, 3:] = -float("inf"), -float("inf")
    infinite[2, -1] = float("inf")
    last[:, -1] = 10
    nan[2, width // 2], nan[3, -1], nan[3, 0] = float("nan"), float("nan"), float("nan")
    first_and_last[:, 0] = first_and_last[:, -1] = 10
    for name, scores in (("distinct", distinct), ("ties", ties), ("infinite", infinite), ("last", last), ("nan", nan),
                         ("first_and_last", first_and_last), ("no row", distinct[:0])):
        assert torch.equal(argmax_rows(scores), scores.argmax(1)), name


@pytest.mark.parametrize("threads", [1, 2])
def test_few_scores_go_to_torch_at_once(threads, monkeypatch):
    """A few sentences' scores (a small batch, or the last unfinished sentences) are one torch.topk or
    argmax call, whose fixed cost is below the blocks' dozen calls; many go through the blocks. Each way
    gives torch's answer."""
    calls, topk = [], torch.topk
    monkeypatch.setattr(torch, "topk", lambda x, *a, **kw: calls.append(x.shape) or topk(x, *a, **kw))
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    g = torch.Generator().manual_seed(threads)
    for rows, direct in ((7, True), (12 * threads, True), (13 * threads, False), (64, False)):
        scores = torch.randn(rows, 8054, generator=g)
        calls.clear()
        values, indices = topk_rows(scores, 1)
        assert torch.equal(indices, topk(scores, 1, dim=1).indices)
        assert (calls == [scores.shape]) == direct, rows
        assert torch.equal(argmax_rows(scores), scores.argmax(1))
    assert generate_module.few_scores(torch.zeros(7, 8054), generate_module.ARGMAX_DIRECT_SCORES) == (threads == 2)


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


def first_read_from(step, sync_every):
    return next(u for u in range(step, 10 ** 6) if syncs_after(u, sync_every))


class Recorded:
    """What a decoding computes: rows per step, the sentence of each row (or beam group) as finished ones are
    left out (`still_decoded`), each step's logits (greedy) with their sentences, the hypotheses offered
    (sentence, length, score)."""

    def __init__(self, dec, monkeypatch):
        self.rows, self.logits, self.hypotheses, self.decoded = [], [], set(), None
        self.hooks = [dec.layer_norm_emb.register_forward_hook(lambda m, args, out: self.rows.append(len(out))),
                      dec.pred_layer.proj.register_forward_hook(lambda m, args, out: self.logits.append(
                          (out, self.sentences(len(out)))))]
        still_decoded, add = generate_module.still_decoded, generate_module.BeamHypotheses.add

        def tracked(*args):
            kept = still_decoded(*args)
            if kept is not None:
                self.decoded = self.sentences(len(args[0]))[kept]
            return kept

        def offered(hyps, tokens, sums, length, offer):
            sentences = self.sentences(len(offer))
            self.hypotheses |= {(int(sentences[i]), length, sums[i, j].item()) for i, j in offer.nonzero().tolist()}
            return add(hyps, tokens, sums, length, offer)
        monkeypatch.setattr(generate_module, "still_decoded", tracked)
        monkeypatch.setattr(generate_module.BeamHypotheses, "add", offered)

    def sentences(self, n):
        return torch.arange(n) if self.decoded is None else self.decoded

    def remove(self):
        for hook in self.hooks:
            hook.remove()


def decode_recorded(dec, monkeypatch, generate, drop=True):
    with monkeypatch.context() as m:
        if not drop:
            m.setattr(generate_module, "still_decoded", lambda *args: None)
        recorded = Recorded(dec, m)
        try:
            return generate(), recorded
        finally:
            recorded.remove()


def test_row_roundings_hold_for_other_matrices(threads):
    """MKL's roundings by number of rows, found on random matrices of a shape, hold for others of that
    shape: a row of an m-row matmul equals that of a large one (here 32 x small_rows rows) exactly where m
    is not among those `row_roundings` finds; where it says the larger numbers settle, they round as the
    large one does. One row always takes other kernels (a matrix-vector product). (2048, 512): on an
    Intel Xeon with two threads, 256 rows still round otherwise than 700."""
    g = torch.Generator().manual_seed(1)
    bound = small_rows(threads)
    for width, out in ((256, 1024), (1024, 256), (128, 8000), (32, 24), (2048, 512)):
        otherwise, settled = row_roundings(width, out, threads)
        assert 1 in otherwise
        x, weight, bias = (torch.randn(*shape, generator=g) for shape in ((32 * bound, width), (out, width), (out,)))
        full = F.linear(x, weight, bias)
        if settled:
            assert {m for m in range(1, bound) if not torch.equal(F.linear(x[:m], weight, bias), full[:m])} == otherwise
            assert all(torch.equal(F.linear(x[:m], weight, bias), full[:m]) for m in (bound + 2, 4 * bound, 11 * bound))


@torch.no_grad()
@pytest.mark.parametrize("dim", [128, 192, 256])
def test_maps_side_by_side_give_each_maps_values(threads, dim):
    """Attention computes its query, key and value maps in one matmul; outside training and
    `free_roundings`, only for numbers of rows whose values are each map's own (on an Intel Xeon with two
    threads, 4 and 5 rows 128 or 192 wide were not)."""
    from xlm.model.transformer import MultiHeadAttention
    torch.manual_seed(0)
    attention = MultiHeadAttention(4, dim, 0.0)
    maps = (attention.q_lin, attention.k_lin, attention.v_lin)
    x = torch.randn(1, 80, dim)
    for m in range(1, 81):
        for linears in (maps, maps[1:]):
            side_by_side = attention._projections(x[:, :m], *linears)
            assert torch.equal(side_by_side, torch.cat([lin(x[:, :m]) for lin in linears], dim=-1))


def test_maps_side_by_side_off_the_cpu_only_where_roundings_are_free():
    """On CUDA cuBLAS picks its kernel by the matmul's shape, so the maps side by side may round otherwise
    than the original's three matmuls: evaluation and decoding keep the three, training and
    `free_roundings` stack them (a meta tensor stands for the GPU's: the decision reads only its device)."""
    from xlm.model.transformer import MultiHeadAttention
    x = torch.empty(2, 5, 64, device="meta")
    assert MultiHeadAttention._side_by_side_rounds_alike(x, 3)  # gradients on: training
    with torch.no_grad():
        assert not MultiHeadAttention._side_by_side_rounds_alike(x, 3)
        assert not MultiHeadAttention._side_by_side_rounds_alike(x.half(), 2)
        with free_roundings():
            assert MultiHeadAttention._side_by_side_rounds_alike(x, 3)


def test_matmul_shapes_name_every_matmul_over_the_rows():
    """The shapes whose roundings decide whether rows may change: the linear layers', the attention's maps
    side by side, and a memory's sub-key scores (a matmul with its keys, not a linear layer)."""
    from xlm.model.memory import MemoryConfig
    config = TransformerConfig(n_words=40, emb_dim=32, n_layers=2, n_heads=4, mem_positions=[(1, "after")],
                               memory=MemoryConfig(k_dim=24, heads=2, knn=4, n_keys=10, query_batchnorm=False))
    assert matmul_shapes(TransformerModel(config)) == {(32, 32), (32, 96), (32, 64), (32, 128), (128, 32),
                                                       (32, 40), (32, 48), (12, 10)}


def test_rows_may_change_where_each_row_rounds_alike(threads):
    """Both numbers of rows must round alike through every shape of the model."""
    shapes = frozenset({(32, 128), (128, 32), (32, 24)})
    found = [row_roundings(*shape, threads) for shape in shapes]
    otherwise, settled = frozenset().union(*(o for o, _ in found)), all(s for _, s in found)
    for before, after in ((32, 6), (32, 20), (12, 7), (3, 8)):
        assert rows_may_change(before, after, torch.float32, shapes) == (not {before, after} & otherwise)
    assert not rows_may_change(32, 1, torch.float32, shapes) and not rows_may_change(32, 0, torch.float32, shapes)
    assert rows_may_change(400, 300, torch.float32, shapes) == settled
    assert rows_may_change(30, 30, torch.float32, shapes) and rows_may_change(32, 1, torch.bfloat16, shapes)
    with free_roundings():  # back-translation's generation: nothing compares it
        assert rows_may_change(30, 1, torch.float32, shapes)


def fewest_rows(before, left, shapes):
    """What `still_decoded` keeps of `before` rows, `left` of them unfinished."""
    return next((k for k in range(left, before) if rows_may_change(before, k, torch.float32, shapes)), before)


MORE_SOURCES = SOURCES + [[6, 6, 7, 4, 10, 9, 5, 8], [8], [4, 4]]


@torch.no_grad()
@pytest.mark.parametrize("n_sentences,sync_every", [(8, 1), (8, 3), (3, 1)])
def test_greedy_leaves_finished_sentences_out(reverser, monkeypatch, threads, n_sentences, sync_every):
    """The original decodes every row at every step, finished or not. On the CPU, at each host read, the
    finished sentences are left out as far as MKL rounds each row as with the whole batch
    (`rows_may_change`): each logit of an unfinished sentence is bit for bit that of the whole batch (the
    original's shapes). Decoding stops at the first host read after the last </s>."""
    enc, dec = reverser
    src = encode(enc, MORE_SOURCES[:n_sentences])

    def greedy():
        return generate_greedy(dec, *src, tgt_lang_id=1, max_len=12, sync_every=sync_every)
    (out, lengths), seen = decode_recorded(dec, monkeypatch, greedy)
    (whole, whole_lengths), whole_seen = decode_recorded(dec, monkeypatch, greedy, drop=False)
    assert torch.equal(out, whole) and torch.equal(lengths, whole_lengths)
    assert len(set(lengths.tolist())) > 2
    # the step after step s computes the sentences unfinished at the last read up to s (sentence i's </s>
    # comes at step lengths[i] - 2)
    rows, expected = n_sentences, [n_sentences]
    for step in range(len(seen.rows) - 1):
        if syncs_after(step + 1, sync_every):
            rows = fewest_rows(rows, int((lengths - 2 > step).sum()), matmul_shapes(dec))
        expected.append(rows)
    assert seen.rows == expected
    assert len(seen.rows) == first_read_from(int(lengths.max()) - 1, sync_every)
    assert whole_seen.rows == [n_sentences] * len(seen.rows)
    for step, ((logits, sentences), (whole_logits, _)) in enumerate(zip(seen.logits, whole_seen.logits)):
        going_on = lengths[sentences] - 2 >= step
        assert torch.equal(logits[going_on], whole_logits[sentences[going_on]])
    assert (min(seen.rows) < n_sentences) == (n_sentences > 3)


@torch.no_grad()
@pytest.mark.parametrize("beam_size", [3, 4])
def test_beam_leaves_done_sentences_out(reverser, monkeypatch, threads, beam_size):
    """A sentence whose beam search is done (enough finished hypotheses, none of the running ones can beat
    them) is computed on in the original until all are. On the CPU it is left out, where MKL rounds each
    row as with the whole batch: its answer is final, and every hypothesis score of the others stays that
    of the whole batch, bit for bit. The search stops at the first host read after the last sentence is
    done."""
    enc, dec = reverser
    sources = MORE_SOURCES
    src = encode(enc, sources)

    def beam():
        return generate_beam(dec, *src, 1, beam_size, max_len=16, sync_every=2)
    (out, lengths), seen = decode_recorded(dec, monkeypatch, beam)
    (whole, whole_lengths), whole_seen = decode_recorded(dec, monkeypatch, beam, drop=False)
    assert torch.equal(out, whole) and torch.equal(lengths, whole_lengths)
    assert seen.hypotheses == whole_seen.hypotheses
    alone = []  # the steps each sentence runs alone, stopping as soon as it is done
    for i in range(len(sources)):
        (one, _), one_seen = decode_recorded(dec, monkeypatch, lambda: generate_beam(
            dec, src[0][i:i + 1, :int(src[1][i])], src[1][i:i + 1], 1, beam_size, max_len=16, sync_every=1))
        assert torch.equal(one[0, :int(lengths[i])], out[i, :int(lengths[i])])
        alone.append(len(one_seen.rows))
    assert len(set(alone)) > 1
    assert whole_seen.rows == [beam_size * len(sources)] * first_read_from(max(alone), 2)
    assert len(seen.rows) == len(whole_seen.rows)
    whole_rows = beam_size * len(sources)
    assert min(seen.rows) < whole_rows
    assert all(rows_may_change(whole_rows, rows, torch.float32, matmul_shapes(dec)) for rows in seen.rows)


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


def reference_beam(dec, src_enc, src_len, beam_size, length_penalty, early_stopping, max_len):
    """The original's beam search for one sentence, written plainly from its rules: every prefix scored
    anew (no cache); candidates: the 2 * beam_size best (beam, word) by summed log-probability, taken in
    order until beam_size of them continue; a taken one ending in </s> (any taken one, at the last step)
    is finished with score sum / len ** length_penalty, len counting the leading </s>. The sentence stops
    once beam_size are finished and early_stopping, or the beam_size-th best finished score is >= the
    best candidate's sum / (max_len - 1) ** length_penalty. Answer: the first finished among the best,
    and the number of decoding steps run."""
    n_words = dec.config.n_words
    beams = [([1], 0.0)] + [([1], -1e9)] * (beam_size - 1)
    finished = []  # (score, tokens), in the order they finish
    for cur_len in range(1, max_len):
        x = torch.tensor([tokens for tokens, _ in beams])
        h = dec(x, torch.full((beam_size,), cur_len), langs=1, causal=True,
                src_enc=src_enc.expand(beam_size, -1, -1), src_len=src_len.expand(beam_size))
        summed = (F.log_softmax(dec.get_scores(h[:, -1]).float(), dim=-1)
                  + torch.tensor([s for _, s in beams], dtype=torch.float32)[:, None])
        values, indices = (t.tolist() for t in torch.topk(summed.view(-1), 2 * beam_size))
        ranked = sorted((s for s, _ in finished), reverse=True)
        if len(ranked) >= beam_size and (early_stopping or
                                         ranked[beam_size - 1] >= values[0] / (max_len - 1) ** length_penalty):
            break
        next_beams = []
        for value, index in zip(values, indices):
            prefix, word = beams[index // n_words][0], index % n_words
            if word == 1 or cur_len == max_len - 1:
                finished.append((value / len(prefix) ** length_penalty, prefix))
            else:
                next_beams.append((prefix + [word], value))
            if len(next_beams) == beam_size:
                break
        beams = next_beams
    return max(finished, key=lambda f: f[0])[1] + [1], cur_len


@torch.no_grad()
@pytest.mark.parametrize("model", ["trained", "random"])
def test_beam_follows_the_original_rules(reverser, model):
    """The batched beam search against the plain one above, over beam sizes, length penalties,
    early stopping, batch sizes and max_len (short ones cut hypotheses, so all are finalised); one
    sentence at a time with a stop check every step, it must also stop after the same step. The random
    model's </s> is made likely, so that hypotheses of many lengths finish and early stopping matters."""
    if model == "trained":
        enc, dec = reverser
    else:
        enc, dec = [m.eval() for m in model_pair(seed=5)]
        dec.pred_layer.proj.bias[1] += 2.0
    steps = []
    dec.layer_norm_emb.register_forward_hook(lambda *_: steps.append(1))  # once per decoding step
    sources = SOURCES + [[6, 6, 7, 4, 10, 9], [8]]
    for beam_size, length_penalty, early_stopping, max_len, bs in [
            (2, 1.0, False, 12, 7), (3, 0.5, False, 9, 7), (5, 2.0, False, 12, 3), (4, 2.0, True, 12, 7),
            (3, 0.0, True, 5, 7), (5, 0.7, False, 4, 7), (2, 1.5, True, 3, 1), (5, -0.5, False, 8, 7)]:
        for start in range(0, len(sources), bs):
            src_enc, src_len = encode(enc, sources[start:start + bs])
            out, lengths = generate_beam(dec, src_enc, src_len, 1, beam_size, length_penalty, early_stopping,
                                         max_len)
            assert out.shape[1] == int(lengths.max())
            for i in range(len(src_len)):
                one = src_enc[i:i + 1, :int(src_len[i])], src_len[i:i + 1]
                expected, expected_steps = reference_beam(dec, *one, beam_size, length_penalty, early_stopping,
                                                          max_len)
                config = (beam_size, length_penalty, early_stopping, max_len, sources[start + i])
                assert out[i, :lengths[i]].tolist() == expected, config
                assert (out[i, lengths[i]:] == 2).all()
                steps.clear()
                generate_beam(dec, *one, 1, beam_size, length_penalty, early_stopping, max_len, sync_every=1)
                assert len(steps) == expected_steps, config


@torch.no_grad()
@pytest.mark.parametrize("beam_size", [2, 5])
def test_beams_read_their_ancestors_copy_of_the_source_where_the_copies_differ(reverser, monkeypatch, beam_size):
    """Each beam's copy of its source's keys and values comes from one matmul over every beam's rows,
    which MKL rounds apart for a few rows with many threads (seen at 16 and 32 threads on a Zen 5). The
    original reorders those copies with the beams; after the first step every beam descends from the
    first (the others start at -1e9), so its copy is all that counts. Here the copies are made to differ
    by far more than a rounding: every hypothesis offered, and its score, stays that of copies made equal
    to the first beam's."""
    from xlm.model.transformer import MultiHeadAttention
    enc, dec = reverser
    src = encode(enc, SOURCES)
    source_keys_values = MultiHeadAttention.source_keys_values

    def apart(self, src_enc):
        later_beams = (torch.arange(len(src_enc)).repeat_interleave(self.n_heads) % beam_size > 0).view(-1, 1, 1)
        return [t + later_beams * torch.randn(t.shape, generator=torch.Generator().manual_seed(0))
                for t in source_keys_values(self, src_enc)]

    offered, add = [], generate_module.BeamHypotheses.add
    monkeypatch.setattr(generate_module.BeamHypotheses, "add", lambda self, tokens, sums, length, which: (
        offered.append((tokens[which].tolist(), sums[which].tolist())), add(self, tokens, sums, length, which)))

    def decode():
        offered.clear()
        out, lengths = generate_beam(dec, *src, 1, beam_size, length_penalty=1.0, max_len=12)
        return out.tolist(), lengths.tolist(), list(offered)
    alike = decode()
    monkeypatch.setattr(MultiHeadAttention, "source_keys_values", apart)
    assert decode() == alike


class HostReads(TorchDispatchMode):
    """Counts the operations that make the host wait for a device value: reading a scalar, and indexing
    with a boolean mask (whose size depends on the values); `tolist` and `numpy` are counted by the test."""
    READS = {torch.ops.aten._local_scalar_dense.default, torch.ops.aten.nonzero.default,
             torch.ops.aten.is_nonzero.default, torch.ops.aten.equal.default}

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        masks = [a for a in args if isinstance(a, (list, tuple)) for a in a if isinstance(a, torch.Tensor)
                 and a.dtype == torch.bool]
        self.count += func in self.READS or (func.__name__.startswith("index") and bool(masks))
        return func(*args, **(kwargs or {}))


@torch.no_grad()
@pytest.mark.parametrize("generate", ["greedy", "beam"])
def test_decoding_reads_the_host_every_few_steps(monkeypatch, generate):
    """</s> made impossible, so every step runs: where a host read waits for the device, one per
    SYNC_EVERY steps, after 1, 2 and 4 steps, and the final trim; beam search may read once more at the
    start, whether the beams' copies of each source are equal (`beams_share_source`)."""
    monkeypatch.setattr(generate_module, "reads_on_host", lambda device: False)  # as on CUDA
    enc, dec = [m.eval() for m in model_pair(seed=1)]
    dec.pred_layer.proj.bias[1] = -1e4
    src = encode(enc, SOURCES)
    max_len = 30
    with HostReads() as reads:
        for name in ("tolist", "numpy"):
            method = getattr(torch.Tensor, name)
            monkeypatch.setattr(torch.Tensor, name, lambda self, *a, _m=method, **k: (
                setattr(reads, "count", reads.count + 1), _m(self, *a, **k))[1])
        if generate == "greedy":
            out, _ = generate_greedy(dec, *src, tgt_lang_id=1, max_len=max_len)
        else:
            out, _ = generate_beam(dec, *src, tgt_lang_id=1, beam_size=4, length_penalty=1.0, max_len=max_len)
    assert out.shape[1] == max_len
    assert reads.count <= math.ceil((max_len - 1) / SYNC_EVERY) + 3 + 1 + (generate == "beam"), reads.count


def test_host_reads_after_1_2_4_steps_then_every_few():
    assert [s for s in range(1, 30) if syncs_after(s, SYNC_EVERY)] == [1, 2, 4, 8, 16, 24]
    assert all(syncs_after(s, 1) for s in range(1, 30))


@torch.no_grad()
@pytest.mark.parametrize("on_host", [True, False])
def test_decoding_stops_after_one_step_when_every_sentence_ends_at_once(monkeypatch, on_host):
    """As a model early in training often does: one step, on the CPU and where host reads wait for the
    device, as in the original."""
    monkeypatch.setattr(generate_module, "reads_on_host", lambda device: on_host)
    enc, dec = [m.eval() for m in model_pair(seed=1)]
    dec.pred_layer.proj.bias[1] = 1e4
    src = encode(enc, SOURCES)
    steps = []
    hook = dec.layer_norm_emb.register_forward_hook(lambda m, args, out: steps.append(len(out)))
    try:
        out, lengths = generate_greedy(dec, *src, tgt_lang_id=1, max_len=30)
    finally:
        hook.remove()
    assert len(steps) == 1
    assert out.tolist() == [[1, 1]] * len(SOURCES) and lengths.tolist() == [2] * len(SOURCES)


def test_autocast_keeps_the_cache_in_its_dtype(reverser, monkeypatch):
    """Under bf16 autocast the keys and values are cached in bf16, as the linear layers make them, not in
    the float32 of the embeddings (which every step would cast again); the outputs are those of a
    float32 cache, whose entries are bf16 values anyway."""
    import xlm.model.transformer as transformer
    enc, dec = reverser
    states = []
    start = dec.start_decoding
    monkeypatch.setattr(dec, "start_decoding", lambda *a, **k: states.append(start(*a, **k)) or states[-1])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        src = encode(enc, SOURCES)
        outputs = [generate_greedy(dec, *src, tgt_lang_id=1, max_len=12),
                   generate_beam(dec, *src, 1, beam_size=3, length_penalty=1.0, early_stopping=False, max_len=12)]
        assert src[0].dtype == torch.float32 and states[0].kv.dtype == torch.bfloat16
        assert states[0].source_bias.dtype == torch.bfloat16
        monkeypatch.setattr(transformer, "compute_dtype", lambda t: t.dtype)
        float32_cache = [generate_greedy(dec, *src, tgt_lang_id=1, max_len=12),
                         generate_beam(dec, *src, 1, beam_size=3, length_penalty=1.0, early_stopping=False,
                                       max_len=12)]
        assert states[-1].kv.dtype == torch.float32
    for (a, la), (b, lb) in zip(outputs, float32_cache):
        assert torch.equal(a, b) and torch.equal(la, lb)


@torch.no_grad()
@pytest.mark.parametrize("seqs", [[[4, 5], []], [[4, 5, 6, 7, 8], [9], [10, 11]]])
def test_evaluation_leaves_the_padding_out_where_rows_round_alike(monkeypatch, threads, seqs):
    """On the CPU the encoder computes the real tokens alone, fewer rows than the original's padded batch:
    in evaluation only where MKL rounds each row alike with both numbers, so that the encoder output that
    decoding starts from is the original's bit for bit (here as the padded computation, CUDA's path)."""
    import xlm.model.transformer as transformer
    enc = model_pair()[0].eval()
    x, lengths = batch(seqs)
    packed = []
    monkeypatch.setattr(transformer, "Packing", lambda *args: packed.append(args) or Packing(*args))
    out = enc(x, lengths, langs=0)
    with monkeypatch.context() as m:
        m.setattr(transformer, "reads_on_host", lambda device: False)
        padded = enc(x, lengths, langs=0)
    real = torch.arange(x.shape[1])[None, :] < lengths[:, None]
    assert torch.equal(out[real], padded[real])
    layers = matmul_shapes(enc.attentions, enc.ffns)
    assert bool(packed) == rows_may_change(x.numel(), int(lengths.sum()), torch.float32, layers)


@torch.no_grad()
def test_decoding_through_onednn_gives_f_linears_outputs(onednn, monkeypatch, threads):
    """On a model wide enough, evaluation and decoding compute their matmuls through oneDNN in MKL's order
    (xlm/model/linear.py): the encoder output, the teacher-forced logits and the greedy and beam outputs
    are bit for bit those of F.linear (MKL) alone, the original's."""
    if linear_module.mkl_k_blocks(256, threads) is None:
        pytest.skip("MKL's order is not found on this CPU: decoding calls F.linear")
    torch.manual_seed(6)
    kw = dict(n_words=600, emb_dim=256, n_layers=2, n_heads=8, n_langs=2, gelu_activation=True)
    enc, dec = (TransformerModel(TransformerConfig(**kw, is_decoder=d)).eval() for d in (False, True))
    dec.pred_layer.proj.bias[1] -= 2  # </s>, the first input, which tied embeddings favour, less likely
    x, lengths = batch([torch.randint(4, 600, (n,)).tolist() for n in (3, 9, 5, 12, 7, 4)])
    calls = []
    onednn = linear_module._onednn_linear
    monkeypatch.setattr(linear_module, "_onednn_linear", lambda *a: calls.append(1) or onednn(*a))

    def decode():
        src = enc(x, lengths, langs=0), lengths
        logits = dec.get_scores(dec(x, lengths, langs=1, causal=True, src_enc=src[0], src_len=lengths)[0])
        return [src[0], logits, *generate_greedy(dec, *src, tgt_lang_id=1, max_len=20),
                *generate_beam(dec, *src, 1, beam_size=4, length_penalty=0.7, max_len=20)]

    decode()  # the first call of each shape returns F.linear's values (checked against oneDNN's)
    calls.clear()
    through_onednn = decode()
    assert calls
    monkeypatch.setattr(linear_module, "onednn_chosen", lambda: False)
    calls.clear()
    for a, b in zip(through_onednn, decode(), strict=True):
        assert torch.equal(a, b)
    assert not calls
    lengths_seen = through_onednn[3].tolist() + through_onednn[5].tolist()
    assert min(lengths_seen) < 20 == max(lengths_seen)  # some sentences end early, some run to max_len


@torch.no_grad()
@pytest.mark.parametrize("bs", [1, 3])
def test_attention_over_the_source_is_the_originals_bit_for_bit(bs):
    """One decoding step's attention over the encoder output equals the original's formula (4-d matmuls
    over heads, softmax in float32) bit for bit, one row or several: torch's matmul copies the transposed
    keys of several rows into one tensor and reads one row's in place, and MKL rounds the two layouts
    apart (at 256 dimensions, 8 heads)."""
    from xlm.model.transformer import MultiHeadAttention
    torch.manual_seed(7)
    heads, dim, d = 8, 256, 32
    attention = MultiHeadAttention(heads, dim, dropout=0.0).eval()
    src, x = torch.randn(bs, 13, dim), torch.randn(bs, dim)
    keys_t, values = attention.source_keys_values(src)
    ours = attention.step_cross(x, keys_t, values, torch.zeros(bs * heads, 1, 13))

    def shape(t):
        return t.view(bs, -1, heads, d).transpose(1, 2)
    q = shape(F.linear(x[:, None], attention.q_lin.weight, attention.q_lin.bias)) / math.sqrt(d)
    k, v = (shape(F.linear(src, lin.weight, lin.bias)) for lin in (attention.k_lin, attention.v_lin))
    weights = F.softmax(torch.matmul(q, k.transpose(2, 3)).float(), dim=-1)
    context = torch.matmul(weights, v).transpose(1, 2).reshape(bs, dim)
    assert torch.equal(ours, F.linear(context, attention.out_lin.weight, attention.out_lin.bias))


@torch.no_grad()
@pytest.mark.parametrize("beam_size", [1, 3])
def test_decoding_runs_to_one_past_the_positions(beam_size):
    """A translation may end with its forced </s> at position n_positions, which is an output and never an
    input: the original's max_len, 1.5 x the source + 10, passes the positions of long sources, and it
    writes such translations whole (it fails only on one still unfinished there). Beam search's stopping
    test keeps the original's max_len."""
    torch.manual_seed(0)
    kw = dict(n_words=N_WORDS, emb_dim=32, n_layers=1, n_heads=4, n_langs=2, n_positions=16)
    enc = TransformerModel(TransformerConfig(**kw)).eval()
    dec = TransformerModel(TransformerConfig(**kw, is_decoder=True)).eval()
    dec.pred_layer.proj.bias[1] = -1e4  # </s> never chosen: every translation runs to the end
    x, lengths = batch([[4, 5, 6, 7, 8, 9, 10], [5, 6]])
    src = (enc(x, lengths, langs=0), lengths)
    if beam_size == 1:
        out, out_len = generate_greedy(dec, *src, tgt_lang_id=1, max_len=1000)
        uncached, _ = generate_greedy(dec, *src, tgt_lang_id=1, max_len=1000, use_cache=False)
        assert torch.equal(out, uncached)
    else:
        out, out_len = generate_beam(dec, *src, tgt_lang_id=1, beam_size=beam_size, max_len=1000)
    assert out.shape == (2, 17) and out_len.tolist() == [17, 17]  # 15 words between the two </s>
    assert (out[:, 0] == 1).all() and (out[:, -1] == 1).all() and (out[:, 1:-1] > 3).all()
    hyps = generate_module.BeamHypotheses(2, 3, 1000, 1.5, False, 2, "cpu", steps=17)
    assert hyps.max_len_penalty == 999 ** 1.5 and hyps.tokens.shape == (2, 3, 17)
