"""Specification of minillm.model: config, causality, padding invariance, batch independence, the decoding
cache, gradients, fused vs hand-written paths, presets, FLOP count. Tiny models (C = 16-32, 1-2 layers)."""
import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import example, given, settings
from hypothesis import strategies as st
from torch.utils.flop_counter import FlopCounterMode

from minillm.model import DecoderCache, ModelConfig, Seq2Seq
from minillm.transformer import depth_rates

TOL = dict(atol=1e-5, rtol=1e-5)
V = 40


def tiny_config(**overrides) -> ModelConfig:
    """Two blocks on each side and a vocabulary of V = 40 (the ids random_batch draws)."""
    base = dict(vocab_size=V, d_model=16, n_heads=2, n_encoder_layers=2, n_decoder_layers=2, d_ff=32,
                dropout=0.0, max_len=64)
    return ModelConfig(**{**base, **overrides})


def two_layer_model(seed=0, **overrides) -> Seq2Seq:
    """A tiny_config model in eval mode. Unlike the conftest `tiny_model` (one block each side), two blocks
    each side, so that what is kept per block (the cache, drop-path rates, gradients through the stack, the
    FLOP count) is checked across a stack; plain `@given` tests cannot take the function-scoped fixture."""
    torch.manual_seed(seed)
    return Seq2Seq(tiny_config(**overrides)).eval()


def random_batch(gen, B, S, T, pad_src=True, pad_tgt=True):
    """Real tokens are ids 3..V-1; right padding with pad_id 0; targets start with bos_id 1."""
    src = torch.randint(3, V, (B, S), generator=gen)
    tgt = torch.randint(3, V, (B, T), generator=gen)
    tgt[:, 0] = 1
    for b in range(B):
        if pad_src:
            src[b, torch.randint(1, S + 1, (1,), generator=gen).item():] = 0
        if pad_tgt:
            tgt[b, torch.randint(1, T + 1, (1,), generator=gen).item():] = 0
    return src, tgt


variants = st.fixed_dictionaries({
    "ffn": st.sampled_from(["gelu", "swiglu"]), "norm": st.sampled_from(["layernorm", "rmsnorm"]),
    "pos": st.sampled_from(["sinusoidal", "rope"]), "fused": st.booleans(),
    "layer_scale": st.sampled_from([0.0, 0.5]),
})


# ---------------------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------------------
def test_config_round_trips_through_asdict():
    cfg = ModelConfig.preset("small", vocab_size=1234, ffn="swiglu", drop_path=0.1)
    d = dataclasses.asdict(cfg)
    assert ModelConfig(**d) == cfg
    assert d["vocab_size"] == 1234 and d["d_model"] == 256


def test_presets_have_the_promised_sizes():
    # Built on the meta device: shapes only, no memory, so the 100M model costs nothing here.
    with torch.device("meta"):
        small = Seq2Seq(ModelConfig.preset("small"))
        base = Seq2Seq(ModelConfig.preset("base"))
    assert small.cfg.d_model == 256 and small.cfg.n_heads == 4 and small.cfg.d_ff == 1024
    assert small.cfg.n_encoder_layers == small.cfg.n_decoder_layers == 4 and small.cfg.vocab_size == 8000
    assert 8e6 < small.num_params() < 12e6
    assert 90e6 < base.num_params() < 120e6
    assert small.num_params(non_embedding=True) == small.num_params() - 8000 * 256   # tied: counted once


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="unknown model preset"):
        ModelConfig.preset("huge")
    with pytest.raises(ValueError, match="unknown ModelConfig field"):
        ModelConfig.preset("small", d_modle=128)
    with pytest.raises(ValueError, match="divisible"):
        tiny_config(d_model=18, n_heads=4)
    with pytest.raises(ValueError, match="ffn"):
        tiny_config(ffn="relu")
    with pytest.raises(ValueError, match="dropout"):
        tiny_config(dropout=1.5)
    with pytest.raises(ValueError, match="pad_id"):
        tiny_config(pad_id=V)


def test_bad_ids_are_rejected_by_name(tiny_model):
    model = tiny_model()
    with pytest.raises(ValueError, match="src_ids"):
        model(torch.ones(2, 3), torch.ones(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="tgt_in_ids"):
        model(torch.ones(2, 3, dtype=torch.long), torch.ones(3, dtype=torch.long))
    with pytest.raises(ValueError, match="max_len"):
        model(torch.ones(1, model.cfg.max_len + 1, dtype=torch.long), torch.ones(1, 3, dtype=torch.long))


def test_drop_path_rate_grows_linearly_with_depth():
    assert depth_rates(0.2, 4) == pytest.approx([0.05, 0.1, 0.15, 0.2])
    model = two_layer_model(drop_path=0.2, n_encoder_layers=2)
    assert [b.drop_path.p for b in model.encoder.blocks] == pytest.approx([0.1, 0.2])


# ---------------------------------------------------------------------------------------------------------
# Invariances
# ---------------------------------------------------------------------------------------------------------
@given(v=variants, T=st.integers(2, 7), seed=st.integers(0, 2**16))
@settings(max_examples=12)
def test_causality_future_targets_do_not_change_past_logits(v, T, seed):
    model = two_layer_model(seed, **v)
    gen = torch.Generator().manual_seed(seed)
    src, tgt = random_batch(gen, 2, 5, T, pad_tgt=False)
    t = torch.randint(0, T - 1, (1,), generator=gen).item()
    changed = tgt.clone()
    changed[:, t + 1:] = torch.randint(3, V, (2, T - t - 1), generator=gen)
    with torch.no_grad():
        a, b = model(src, tgt), model(src, changed)
    assert torch.allclose(a[:, :t + 1], b[:, :t + 1], **TOL)
    assert not torch.allclose(a[:, t + 1:], b[:, t + 1:], **TOL)   # ...while the future does change


@given(v=variants, extra_src=st.integers(1, 4), extra_tgt=st.integers(0, 4), seed=st.integers(0, 2**16))
@settings(max_examples=12)
def test_extra_padding_leaves_real_positions_unchanged(v, extra_src, extra_tgt, seed):
    model = two_layer_model(seed, **v)
    gen = torch.Generator().manual_seed(seed)
    src, tgt = random_batch(gen, 3, 5, 6)
    padded_src = F.pad(src, (0, extra_src), value=0)                  # (B, S + extra)
    padded_tgt = F.pad(tgt, (0, extra_tgt), value=0)                  # (B, T + extra)
    with torch.no_grad():
        ref = model(src, tgt)
        out = model(padded_src, padded_tgt)[:, :6]
    real = tgt != 0                                                   # (B, T)
    assert torch.allclose(out[real], ref[real], **TOL)


@given(v=variants, seed=st.integers(0, 2**16))
@settings(max_examples=10)
def test_batch_independence_in_eval(v, seed):
    model = two_layer_model(seed, **v)
    gen = torch.Generator().manual_seed(seed)
    src, tgt = random_batch(gen, 4, 6, 5)
    with torch.no_grad():
        batched = model(src, tgt)
        for i in range(4):
            alone = model(src[i:i + 1], tgt[i:i + 1])
            assert torch.allclose(batched[i:i + 1], alone, **TOL)
        # Changing another sample changes nothing for sample 0.
        other = src.clone()
        other[1:] = torch.randint(3, V, other[1:].shape, generator=gen)
        assert torch.allclose(model(other, tgt)[0], batched[0], **TOL)


# ---------------------------------------------------------------------------------------------------------
# The decoding cache
# ---------------------------------------------------------------------------------------------------------
@given(v=variants, T=st.integers(1, 8), chunk=st.integers(1, 3), seed=st.integers(0, 2**16))
@example(v=dict(ffn="gelu", norm="layernorm", pos="sinusoidal", fused=True, layer_scale=0.0), T=4, chunk=1, seed=0)
@example(v=dict(ffn="swiglu", norm="rmsnorm", pos="rope", fused=False, layer_scale=0.5), T=5, chunk=2, seed=1)
@settings(max_examples=15)
def test_cached_decoding_equals_full_forward_at_every_step(v, T, chunk, seed):
    # The two examples always run (both position kinds, one token and two per step): a cache that loses the
    # absolute position of the new tokens fails here on every run, not only when the search draws such a case.
    model = two_layer_model(seed, **v)
    gen = torch.Generator().manual_seed(seed)
    src, tgt = random_batch(gen, 3, 6, T)
    with torch.no_grad():
        full = model(src, tgt)                                        # (B, T, V)
        enc_out, src_mask = model.encode(src)
        cache = model.make_cache(enc_out, src_mask)
        for start in range(0, T, chunk):                              # one token, or a few, per step
            step = model.decode_step(tgt[:, start:start + chunk], cache)
            assert cache.length == min(start + chunk, T)
            assert torch.allclose(step, full[:, start:start + chunk], **TOL), f"step at {start}"


def test_cross_attention_keys_values_are_computed_once():
    model = two_layer_model()
    src, tgt = random_batch(torch.Generator().manual_seed(0), 2, 5, 4)
    with torch.no_grad():
        full = model(src, tgt)
        cache = model.make_cache(*model.encode(src))
        # From here on the cross-attention key/value projections must never run again: wreck them.
        for block in model.decoder.blocks:
            for lin in (block.cross_attn.k_proj, block.cross_attn.v_proj):
                lin.weight.fill_(float("nan"))
        steps = [model.decode_step(tgt[:, t:t + 1], cache) for t in range(4)]
    assert torch.allclose(torch.cat(steps, dim=1), full, **TOL)
    assert all(kv.length == 5 for kv in cache.cross_kv)               # fixed size; self K/V grew instead
    assert all(kv.length == 4 for kv in cache.self_kv)


def test_cross_attention_weights_from_decode_step():
    model = two_layer_model(n_heads=2)
    src, tgt = random_batch(torch.Generator().manual_seed(1), 2, 5, 4)
    with torch.no_grad():
        cache = model.make_cache(*model.encode(src))
        logits, cross, _ = model.decode_step(tgt[:, :1], cache, need_weights=True)
        plain = model.decode_step(tgt[:, 1:], cache)                  # the rest, weights not asked for
        cache2 = model.make_cache(*model.encode(src))
        _, cross_all, _ = model.decode_step(tgt, cache2, need_weights=True)  # all 4 positions at once
    assert logits.shape == (2, 1, V) and plain.shape == (2, 3, V)
    assert len(cross) == len(model.decoder.blocks)
    real = (src != 0)[:, None, None, :]                               # (B, 1, 1, S)
    for w, w_all in zip(cross, cross_all):
        assert w.shape == (2, 2, 1, 5)
        assert torch.allclose(w, w_all[:, :, :1], **TOL)
        assert torch.equal(w.masked_select(~real.expand_as(w)), torch.zeros(int((~real.expand_as(w)).sum())))
        assert torch.allclose(w.sum(-1), torch.ones(2, 2, 1), **TOL)  # a distribution over real source tokens


@pytest.mark.parametrize("fused", [True, False])
def test_self_attention_weights_from_decode_step_are_causal_and_match_a_hand_computation(fused):
    model = two_layer_model(n_heads=2, fused=fused)
    src, tgt = random_batch(torch.Generator().manual_seed(3), 3, 5, 6)
    D = model.cfg.d_model // model.cfg.n_heads
    with torch.no_grad():
        _, _, self_w = model.decode_step(tgt, model.make_cache(*model.encode(src)), need_weights=True)
        cache = model.make_cache(*model.encode(src))                  # one position at a time, as decoding does
        rows = [model.decode_step(tgt[:, t:t + 1], cache, need_weights=True)[2] for t in range(6)]
        # Layer 0 by hand: its input is the embedded target; q, k of head h are columns h·D..(h+1)·D.
        block = model.decoder.blocks[0]
        x = block.norm1(model._embed(tgt, 0))                         # (B, T, C)
        q, k = block.self_attn.q_proj(x), block.self_attn.k_proj(x)   # (B, T, C) each
    assert len(self_w) == len(model.decoder.blocks)
    real = tgt != 0                                                   # (B, T) real target tokens
    allowed = torch.ones(6, 6, dtype=torch.bool).tril()[None] & real[:, None, :]   # (B, T, T)
    for layer, w in enumerate(self_w):
        assert w.shape == (3, 2, 6, 6)
        assert torch.equal(w.triu(diagonal=1), torch.zeros_like(w))   # nothing above the diagonal
        assert torch.equal(w.masked_select(~allowed[:, None]), torch.zeros(int((~allowed).sum()) * 2))
        torch.testing.assert_close(w.sum(-1), torch.ones(3, 2, 6), **TOL)   # a distribution over allowed keys
        for t in range(6):                                            # the cached steps saw the same weights
            torch.testing.assert_close(rows[t][layer][:, :, 0], w[:, :, t, :t + 1], **TOL)
    for h in range(2):
        qh, kh = q[..., h * D:(h + 1) * D], k[..., h * D:(h + 1) * D]               # (B, T, D)
        scores = (qh @ kh.transpose(1, 2) / math.sqrt(D)).masked_fill(~allowed, float("-inf"))  # (B, T, T)
        torch.testing.assert_close(self_w[0][:, h], scores.softmax(-1), **TOL)   # Vaswani et al. 2017, eq. 1


def test_cache_reorder_follows_beam_indices():
    model = two_layer_model()
    gen = torch.Generator().manual_seed(2)
    src, tgt = random_batch(gen, 3, 5, 4, pad_tgt=False)
    index = torch.tensor([2, 0, 0, 1])                                # reorder and expand, as beam search does
    with torch.no_grad():
        full = model(src[index], tgt[index])
        cache = model.make_cache(*model.encode(src))
        model.decode_step(tgt[:, :2], cache)
        cache.reorder(index)
        assert cache.src_mask.shape == (4, 5) and cache.length == 2
        out = model.decode_step(tgt[index][:, 2:], cache)
    assert torch.allclose(out, full[:, 2:], **TOL)


def test_decode_step_checks_its_input(tiny_model):
    model = tiny_model().eval()
    src, _ = random_batch(torch.Generator().manual_seed(0), 2, 5, 4)
    cache = model.make_cache(*model.encode(src))
    assert isinstance(cache, DecoderCache)
    with pytest.raises(ValueError, match="batch"):
        model.decode_step(torch.ones(3, 1, dtype=torch.long), cache)
    with pytest.raises(ValueError, match="make_cache"):
        model.make_cache(torch.zeros(2, 5, 16), torch.ones(2, 5))


# ---------------------------------------------------------------------------------------------------------
# Gradients, fused vs hand-written, the decoder's cross-attention input
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("overrides", [
    dict(),
    dict(ffn="swiglu", norm="rmsnorm", pos="rope", layer_scale=0.1, drop_path=0.1, dropout=0.1,
         attention_dropout=0.1, tie_embeddings=False),
])
def test_every_parameter_gets_a_gradient_from_one_step(overrides):
    model = two_layer_model(**overrides).train()
    src, tgt = random_batch(torch.Generator().manual_seed(3), 4, 6, 5)
    logits = model(src, tgt)
    F.cross_entropy(logits.flatten(0, 1), torch.randint(3, V, (4 * 5,)), ignore_index=0).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} received no gradient"
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, f"{name} has a zero gradient"


@given(v=variants, seed=st.integers(0, 2**16))
@settings(max_examples=8)
def test_fused_and_hand_written_paths_agree_in_output_and_gradients(v, seed):
    v = {**v, "fused": False}
    hand = two_layer_model(seed, **v)
    fused = Seq2Seq(tiny_config(**{**v, "fused": True})).eval()
    fused.load_state_dict(hand.state_dict())
    src, tgt = random_batch(torch.Generator().manual_seed(seed), 3, 6, 5)
    outputs = []
    for model in (hand, fused):
        logits = model(src, tgt)
        logits.pow(2).mean().backward()
        outputs.append(logits)
    assert torch.allclose(outputs[0], outputs[1], **TOL)
    for (name, p_hand), p_fused in zip(hand.named_parameters(), fused.parameters()):
        assert torch.allclose(p_hand.grad, p_fused.grad, **TOL), name


def test_cross_attention_reads_the_encoder_output_unnormalised_by_the_decoder(tiny_model):
    # The seed's bug: the decoder's norm was applied to enc_out. Here cross-attention's keys/values come
    # from exactly what the encoder returned, and its queries from the decoder's own norm2.
    model = tiny_model().eval()
    seen = {}
    block = model.decoder.blocks[0]
    block.cross_attn.register_forward_hook(lambda m, args, out: seen.update(q=args[0], kv=args[1]))
    block.norm2.register_forward_hook(lambda m, args, out: seen.update(norm2=out))
    src, tgt = random_batch(torch.Generator().manual_seed(4), 2, 5, 4)
    with torch.no_grad():
        model(src, tgt)
        enc_out, _ = model.encode(src)
    assert torch.equal(seen["kv"], enc_out)
    assert torch.equal(seen["q"], seen["norm2"])


@pytest.mark.parametrize("tie", [True, False])
def test_initial_distribution_is_near_uniform_not_a_copy_of_the_input(tie):
    torch.manual_seed(0)
    C, vocab = 64, 500
    model = Seq2Seq(tiny_config(d_model=C, vocab_size=vocab, tie_embeddings=tie)).eval()
    src, tgt = random_batch(torch.Generator().manual_seed(5), 8, 10, 10, pad_src=False, pad_tgt=False)
    with torch.no_grad():
        logits = model(src, tgt)                                      # (B, T, V)
    # The init docstring's claims: the logits' spread is init_std·√C (0.16 here; tests/test_learning.py checks
    # the exact figure), and even the input token's own logit (tied head) stays small ...
    assert logits.std().item() < 3 / math.sqrt(C)
    own = logits.gather(-1, tgt[..., None])                           # logit of the token just fed
    assert own.mean().item() < 3 / math.sqrt(C) + 1.0
    # ... so the first loss is close to ln V for a random target, and "repeat the input" has an advantage of
    # at most about a nat; an embedding of N(0, 1/C) read without any scale would give the own token a
    # logit of about √C = 8 here, ≈ 4 nats.
    random_target = torch.randint(3, vocab, tgt.shape, generator=torch.Generator().manual_seed(6))
    loss = F.cross_entropy(logits.flatten(0, 1), random_target.flatten())
    assert abs(loss.item() - math.log(vocab)) < 0.2
    copy_loss = F.cross_entropy(logits.flatten(0, 1), tgt.flatten())
    assert math.log(vocab) - copy_loss.item() < 1.5


@pytest.mark.parametrize("ffn", ["gelu", "swiglu"])
def test_flops_per_token_matches_a_counted_forward(ffn):
    model = two_layer_model(ffn=ffn, fused=False)
    B, S, T = 2, 7, 5
    src = torch.randint(3, V, (B, S))
    tgt = torch.randint(3, V, (B, T))
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(src, tgt)
    counted = counter.get_total_flops()
    assert model.flops_per_token(S, T, training=False) * B * (S + T) == pytest.approx(counted, rel=1e-9)
    assert model.flops_per_token(S, T) == 3 * model.flops_per_token(S, T, training=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_fp32_matches_cpu_and_bf16_autocast_trains(tiny_model):
    model = tiny_model(ffn="swiglu", pos="rope").eval()
    src, tgt = random_batch(torch.Generator().manual_seed(6), 3, 6, 5)
    with torch.no_grad():
        on_cpu = model(src, tgt)
        model.cuda()
        on_gpu = model(src.cuda(), tgt.cuda()).cpu()
    # Loose: another process-wide setting (set_float32_matmul_precision) may turn on TF32, 10-bit mantissas.
    assert torch.allclose(on_gpu, on_cpu, atol=5e-3, rtol=5e-3)
    model.train()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits = model(src.cuda(), tgt.cuda())
    assert logits.dtype == torch.bfloat16
    F.cross_entropy(logits.float().flatten(0, 1), tgt.cuda().flatten(), ignore_index=0).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
