"""--compile (torch.compile on bucket-padded batches) and the variable-length attention path."""
import warnings

import pytest
import torch
import torch._inductor.config
import torch.nn.functional as F
from torch._dynamo.utils import counters

import xlm.model.attention as attention
import xlm.model.transformer as transformer
import xlm.train.compile
from xlm.data.datasets import Batch
from xlm.model.attention import varlen_attention
from xlm.model.transformer import TransformerConfig, TransformerModel, flat_positions
from xlm.objectives.lm import MaskingConfig, concat_pair, mask_for_training
from xlm.train.adam import Adam
from xlm.train.compile import PRED_MULTIPLE, BucketPadded, bucket_length


def tiny(**kw):
    torch.manual_seed(0)
    return TransformerModel(TransformerConfig(n_words=60, emb_dim=16, n_layers=2, n_heads=2, n_langs=3, **kw))


def sentences(bs, generator, longest=13):
    lengths = torch.randint(3, longest, (bs,), generator=generator)
    x = torch.randint(14, 60, (bs, int(lengths.max())), generator=generator)
    x[torch.arange(x.shape[1])[None] >= lengths[:, None]] = 2
    return Batch(x, lengths)


def tlm_batches(n, generator):
    """Masked TLM batches of varying rows and lengths: (x, lengths, positions, langs, pred_mask, y)."""
    masking = MaskingConfig(n_words=60)
    for bs in [5, 4, 6, 5][:n]:
        x, lengths, positions, langs = concat_pair(sentences(bs, generator), 1, sentences(bs, generator), 2)
        x, pred_mask, y = mask_for_training(x, lengths, masking, generator)
        yield x, lengths, positions, langs, pred_mask, y


def test_bucket_length():
    assert [bucket_length(n) for n in (1, 8, 9, 16, 17, 100)] == [8, 8, 16, 16, 24, 104]


def test_padding_to_a_bucket_keeps_the_loss():
    """Padding is masked: the loss of a batch padded with 5 more columns is the unpadded one's."""
    model = tiny().eval()
    x, lengths, positions, langs, pred_mask, y = next(tlm_batches(1, torch.Generator().manual_seed(1)))
    loss = model(x, lengths, langs=langs, positions=positions, pred_mask=pred_mask, y=y)
    pad = lambda t, v=0: F.pad(t, (0, 5), value=v)  # noqa: E731
    padded = model(pad(x, 2), lengths, langs=pad(langs), positions=pad(positions), pred_mask=pad(pred_mask, False),
                   y=y)
    assert padded.item() == pytest.approx(loss.item(), rel=1e-6)


def test_compiled_training_matches_eager_and_compiles_once(monkeypatch):
    """Four TLM steps of varying shapes (with Adam updates), eager and through BucketPadded: the same
    losses, and the compiled forward is not compiled again for each new shape."""
    # Inductor's kernels without SIMD: the same graphs and lowering; this test 45 s -> 18 s on 2 cores (cold)
    monkeypatch.setattr(torch._inductor.config.cpp, "vec_isa_ok", False)
    losses = {}
    for name in ("eager", "compiled"):
        model = tiny(dropout=0.0)
        forward = BucketPadded(model) if name == "compiled" else model
        optimizer = Adam(model.parameters(), lr=1e-3)
        torch._dynamo.reset()
        counters.clear()
        losses[name] = []
        for x, lengths, positions, langs, pred_mask, y in tlm_batches(4, torch.Generator().manual_seed(2)):
            # as training passes them: the predicted positions' indices in the flattened rows
            pred_idx = pred_mask.flatten().nonzero().squeeze(1)
            loss = forward(x, lengths, langs=langs, positions=positions, pred_mask=pred_idx, y=y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            losses[name].append(loss.item())
        graphs = counters["stats"]["unique_graphs"]
    assert losses["compiled"] == pytest.approx(losses["eager"], rel=1e-5)
    # with index tensors for the predicted positions there is no graph break at h[pred_mask]; torch marks
    # the sizes dynamic when they first change, so a second compilation may happen
    assert graphs <= 3


def test_batch_sizes_past_the_cpu_matmul_thresholds_do_not_recompile(monkeypatch):
    """Under torch.compile the linear layers are F.linear whatever the batch's size: the CPU's choice of
    kernel by size (`mkl_order_blocks`' 2^21 multiply-adds) had put each size's side of it in a guard, and
    these batches of 64-wide layers, crossing it, compiled the forward 3 times (now once)."""
    monkeypatch.setitem(xlm.train.compile.COMPILE_OPTIONS, "backend", "eager")  # the guards are Dynamo's
    torch.manual_seed(0)
    model = TransformerModel(TransformerConfig(n_words=60, emb_dim=64, n_layers=1, n_heads=4, n_langs=3))
    forward = BucketPadded(model)
    torch._dynamo.reset()
    counters.clear()
    generator = torch.Generator().manual_seed(4)
    for bs, longest in [(6, 20), (5, 17), (7, 30), (4, 12), (8, 25), (3, 9), (2, 40), (30, 60), (40, 100)]:
        batch = sentences(bs, generator, longest)
        x, pred_mask, y = mask_for_training(batch.x, batch.lengths, MaskingConfig(n_words=60), generator)
        forward(x, batch.lengths, langs=1, pred_mask=flat_positions(pred_mask), y=y).backward()
    # rows x 64 x 192 crosses 2^21 between the small batches and the large ones
    assert counters["stats"]["unique_graphs"] <= 2


@pytest.mark.parametrize("asm", [False, True], ids=["softmax", "adaptive_softmax"])
def test_predicted_positions_reach_the_graph_in_a_few_counts(asm):
    """The predicted positions go in padded to a multiple of PRED_MULTIPLE, their targets left out of the
    loss, so that CUDA graphs see a few counts; the loss is the unpadded one. The adaptive softmax, which
    takes no left-out targets, gets them as they are."""
    model = tiny(asm=asm, share_inout_emb=not asm, asm_cutoffs=(20, 40)).eval()
    wrapped = BucketPadded(model)
    counts = []
    del wrapped.compiled  # a module; what takes its place records the count it is given
    wrapped.compiled = lambda *args, **kw: counts.append(len(kw["y"])) or model(*args, **kw)
    unpadded = []
    for x, lengths, positions, langs, pred_mask, y in tlm_batches(3, torch.Generator().manual_seed(3)):
        pred_idx, unpadded = flat_positions(pred_mask), unpadded + [len(y)]
        eager = model(x, lengths, langs=langs, positions=positions, pred_mask=pred_idx, y=y)
        loss = wrapped(x, lengths, langs=langs, positions=positions, pred_mask=pred_idx, y=y)
        assert loss.item() == pytest.approx(eager.item(), rel=1e-6)
    assert len(set(unpadded)) > 1
    assert counts == (unpadded if asm else [PRED_MULTIPLE] * 3)


def reference_varlen_attn(q, k, v, cu_q, cu_k, max_q, max_k):
    """torch.nn.attention.varlen.varlen_attn as documented (CUDA only): segment j's queries
    q[cu_q[j]:cu_q[j+1]] attend to its keys k[cu_k[j]:cu_k[j+1]]; tokens are (T, heads, d)."""
    out = torch.zeros_like(q)
    for j in range(len(cu_q) - 1):
        qs, ks = slice(cu_q[j], cu_q[j + 1]), slice(cu_k[j], cu_k[j + 1])
        if qs.stop > qs.start:
            assert ks.stop - ks.start <= max_k and qs.stop - qs.start <= max_q
            out[qs] = F.scaled_dot_product_attention(q[qs].transpose(0, 1), k[ks].transpose(0, 1),
                                                     v[ks].transpose(0, 1)).transpose(0, 1)
    return out


@pytest.mark.parametrize("qlen", [7, 4])  # self-attention, cross-attention
def test_varlen_segments_match_the_padding_mask(monkeypatch, qlen):
    monkeypatch.setattr(attention, "varlen_attn", reference_varlen_attn)
    torch.manual_seed(0)
    bs, heads, klen, d = 3, 2, 7, 8
    kv_lengths = torch.tensor([7, 2, 5])
    q, k, v = torch.randn(bs, heads, qlen, d), torch.randn(bs, heads, klen, d), torch.randn(bs, heads, klen, d)
    mask = (torch.arange(klen)[None, :] < kv_lengths[:, None])[:, None, None, :]
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(varlen_attention(q, k, v, kv_lengths), expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the varlen flash kernel needs CUDA")
def test_varlen_model_matches_padded_on_cuda(monkeypatch):
    """An MT step in bf16: the loss and every gradient with the varlen kernel and with masks (the keys of
    the padding, which no query sees in the kernel, must get no gradient)."""
    if not attention.has_varlen_kernel() or torch.cuda.get_device_capability() < (8, 0):
        pytest.skip("no varlen kernel here (torch before 2.9, XLM_VARLEN=0 or a GPU before Ampere)")
    generator = torch.Generator().manual_seed(3)
    src, tgt = sentences(6, generator, 40), sentences(6, generator, 40)
    results, kernel_calls = [], []
    kernel = attention.varlen_attn
    monkeypatch.setattr(attention, "varlen_attn", lambda *args: kernel_calls.append(1) or kernel(*args))
    for varlen in (True, False):
        monkeypatch.setattr(transformer, "varlen_applies", transformer.varlen_applies if varlen else
                            (lambda q, dropout: False))
        encoder, decoder = tiny().cuda(), tiny(is_decoder=True).cuda()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            enc = encoder(src.x.cuda(), src.lengths.cuda(), langs=1)
            pred_mask = torch.arange(tgt.x.shape[1])[None] < tgt.lengths[:, None] - 1
            loss = decoder(tgt.x.cuda(), tgt.lengths.cuda(), langs=2, causal=True, src_enc=enc,
                           src_len=src.lengths.cuda(), pred_mask=pred_mask.cuda(),
                           y=tgt.x[:, 1:][pred_mask[:, :-1]].cuda())
        loss.backward()
        grads = {f"{side}.{name}": p.grad.float().cpu() for side, model in (("encoder", encoder), ("decoder", decoder))
                 for name, p in model.named_parameters() if p.grad is not None}
        results.append((loss.item(), grads))
        assert (len(kernel_calls) > 0) == varlen  # the kernel ran in the first pass alone
        kernel_calls.clear()
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-2)
    assert results[0][1].keys() == results[1][1].keys()
    for name, grad in results[0][1].items():
        if name.endswith("k_lin.bias"):  # zero in exact arithmetic (softmax ignores it): rounding noise
            continue
        # bf16 rounds single entries far apart on both sides; a wrong gradient moves the whole tensor
        expected = results[1][1][name]
        assert (grad - expected).norm() <= 3e-2 * expected.norm(), name


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the choice of kernel is CUDA's")
def test_padded_attention_does_not_use_cudnn_on_cuda():
    """Training attention over a padded bf16 batch with dropout (no varlen kernel) takes the memory-efficient
    kernel, not cuDNN's, which would build a graph for each new shape."""
    from torch.profiler import ProfilerActivity, profile
    model = tiny(attention_dropout=0.1, dropout=0.1).cuda().train()
    batch = sentences(6, torch.Generator().manual_seed(4), 40)
    with profile(activities=[ProfilerActivity.CPU]) as prof, torch.autocast("cuda", dtype=torch.bfloat16):
        model(batch.x.cuda(), batch.lengths.cuda(), langs=1).float().sum().backward()
    ops = {e.key for e in prof.key_averages()}
    assert not any("cudnn_attention" in op for op in ops), sorted(op for op in ops if "attention" in op)
    assert any("efficient_attention" in op for op in ops), sorted(op for op in ops if "attention" in op)


def test_varlen_kernel_is_looked_up_not_assumed():
    """A torch before 2.9 has no torch.nn.attention.varlen: there padded attention masks, not crashes."""
    try:
        import torch.nn.attention.varlen  # noqa: F401
        present = True
    except ImportError:
        present = False
    assert attention.has_varlen_kernel() is present


def test_varlen_kernel_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("XLM_VARLEN", "0")
    assert not attention.has_varlen_kernel()


def test_varlen_kernel_lookup_traces_without_warnings():
    """torch.compile traces the lookup (on CUDA, in every attention layer) into one graph, with no warning
    (a functools.cache there made Dynamo warn about the cache it ignores)."""
    def step(x):
        return x + 1 if attention.has_varlen_kernel() else x - 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = torch.compile(step, backend="eager", fullgraph=True)(torch.ones(2))
    assert torch.equal(out, torch.ones(2) + (1 if attention.has_varlen_kernel() else -1))
