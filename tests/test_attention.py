"""Specification of minillm.attention: scaled dot-product attention, masks, multi-head attention, KV cache.

References: a 2-token case computed on paper, torch.nn.functional.scaled_dot_product_attention, and
torch.nn.MultiheadAttention with copied weights (whose key_padding_mask means True = IGNORE, the opposite
of ours). fp32 tolerances are 1e-5 (absolute, on values of order 1).
"""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from minillm.attention import (KVCache, MultiHeadAttention, causal_mask, causal_padding_mask,
                               fused_scaled_dot_product_attention, padding_mask, scaled_dot_product_attention)

TOL = dict(atol=1e-5, rtol=1e-5)


def random_lengths_mask(gen, B, S, allow_empty=False):
    """(B, S) bool key-padding mask with a random number of real tokens per row (right padding)."""
    low = 0 if allow_empty else 1
    lengths = torch.randint(low, S + 1, (B,), generator=gen)
    return torch.arange(S)[None, :] < lengths[:, None]


# ---------------------------------------------------------------------------------------------------------
# scaled_dot_product_attention
# ---------------------------------------------------------------------------------------------------------
def test_two_token_attention_by_hand():
    # One query q = [1, 0] against keys k0 = [1, 0], k1 = [0, 1]; D = 2, so the scores are 1/√2 and 0.
    q = torch.tensor([[1.0, 0.0]])
    k = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    v = torch.tensor([[10.0, 0.0], [0.0, 20.0]])
    out, w = scaled_dot_product_attention(q, k, v)
    e = math.exp(1 / math.sqrt(2))
    w0, w1 = e / (e + 1), 1 / (e + 1)
    assert torch.allclose(w, torch.tensor([[w0, w1]]), **TOL)
    assert torch.allclose(out, torch.tensor([[10 * w0, 20 * w1]]), **TOL)
    # Masking key 1 puts all weight on key 0.
    out, w = scaled_dot_product_attention(q, k, v, mask=torch.tensor([[True, False]]))
    assert torch.equal(w, torch.tensor([[1.0, 0.0]]))
    assert torch.allclose(out, torch.tensor([[10.0, 0.0]]), **TOL)


@given(B=st.integers(1, 3), H=st.integers(1, 3), T=st.integers(1, 6), S=st.integers(1, 7),
       D=st.sampled_from([1, 4, 8]), kind=st.sampled_from(["none", "padding", "causal", "both", "random"]),
       seed=st.integers(0, 2**16))
def test_hand_written_matches_torch_sdpa(B, H, T, S, D, kind, seed):
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, L, D, generator=gen) for L in (T, S, S))
    S_c = max(S, T)   # causal masks need at least as many keys as queries
    if kind in ("causal", "both"):
        k, v = (torch.randn(B, H, S_c, D, generator=gen) for _ in range(2))
    mask = {
        "none": None,
        "padding": random_lengths_mask(gen, B, S)[:, None, None, :],                  # (B, 1, 1, S)
        "causal": causal_mask(T, S_c),                                                # (T, S_c)
        "both": causal_mask(T, S_c) & random_lengths_mask(gen, B, S_c)[:, None, None, :],
        "random": torch.rand(B, 1, T, S, generator=gen) < 0.7,                        # may empty rows
    }[kind]
    out, w = scaled_dot_product_attention(q, k, v, mask)
    fused = fused_scaled_dot_product_attention(q, k, v, mask)
    assert torch.isfinite(out).all() and torch.isfinite(fused).all()
    assert torch.allclose(out, fused, **TOL)
    if mask is None:
        assert torch.allclose(out, F.scaled_dot_product_attention(q, k, v), **TOL)
    else:
        full = mask.expand(B, H, T, k.size(2))
        has_key = full.any(-1)                                                        # (B, H, T)
        ref = F.scaled_dot_product_attention(q, k, v, attn_mask=full)
        # Rows with at least one key: equal to PyTorch. Rows with none: zeros (PyTorch may give NaN).
        assert torch.allclose(out[has_key], ref[has_key], **TOL)
        assert torch.equal(out[~has_key], torch.zeros_like(out[~has_key]))
        assert torch.equal(w[~full], torch.zeros_like(w[~full]))                      # masked keys: weight 0
        sums = w.sum(-1)
        assert torch.allclose(sums[has_key], torch.ones_like(sums[has_key]), **TOL)
        assert torch.equal(sums[~has_key], torch.zeros_like(sums[~has_key]))


@given(T=st.integers(1, 5), S=st.integers(1, 6), seed=st.integers(0, 2**16))
@settings(max_examples=15)
def test_fused_and_hand_written_gradients_agree(T, S, seed):
    gen = torch.Generator().manual_seed(seed)
    base = [torch.randn(2, 2, L, 4, generator=gen) for L in (T, S, S)]
    mask = torch.rand(2, 1, T, S, generator=gen) < 0.6          # some rows fully masked
    mask[0, 0, 0] = False                                        # at least one for sure
    upstream = torch.randn(2, 2, T, 4, generator=gen)
    grads = []
    for fn in (lambda *a: scaled_dot_product_attention(*a)[0], fused_scaled_dot_product_attention):
        leaves = [t.clone().requires_grad_(True) for t in base]
        (fn(*leaves, mask) * upstream).sum().backward()
        grads.append([t.grad for t in leaves])
    for g_hand, g_fused in zip(*grads):
        assert torch.isfinite(g_hand).all() and torch.isfinite(g_fused).all()
        assert torch.allclose(g_hand, g_fused, **TOL)


def test_fully_masked_rows_are_zero_not_nan_with_zero_gradient():
    q, k, v = (torch.randn(1, 1, 3, 4, requires_grad=True) for _ in range(3))
    mask = torch.tensor([[True, False, False], [False, False, False], [True, True, True]])
    for fn in (scaled_dot_product_attention, fused_scaled_dot_product_attention):
        out = fn(q, k, v, mask)
        out = out[0] if isinstance(out, tuple) else out
        assert torch.equal(out[0, 0, 1], torch.zeros(4))
        assert not torch.isnan(out).any()
        q.grad = None
        out[0, 0, 1].sum().backward()              # the empty row alone
        assert torch.equal(q.grad, torch.zeros_like(q.grad))
    _, w = scaled_dot_product_attention(q, k, v, mask)
    assert torch.equal(w[0, 0, 1], torch.zeros(3))


def test_mask_must_be_bool():
    q = torch.randn(1, 2, 4)
    with pytest.raises(TypeError, match="bool"):
        scaled_dot_product_attention(q, q, q, mask=torch.ones(2, 2))
    with pytest.raises(TypeError, match="bool"):
        fused_scaled_dot_product_attention(q, q, q, mask=torch.ones(2, 2))


def test_attention_dropout_zeroes_and_rescales_weights():
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 64, 8), torch.randn(1, 64, 8), torch.randn(1, 64, 8)
    _, w_plain = scaled_dot_product_attention(q, k, v)
    _, w_drop = scaled_dot_product_attention(q, k, v, dropout_p=0.5)
    dropped = w_drop == 0
    assert 0.3 < dropped.float().mean() < 0.7
    assert torch.allclose(w_drop[~dropped], 2 * w_plain[~dropped], **TOL)      # inverted dropout: ×1/(1-p)


# ---------------------------------------------------------------------------------------------------------
# Masks
# ---------------------------------------------------------------------------------------------------------
@given(T=st.integers(1, 8), extra=st.integers(0, 8))
def test_causal_mask_is_bottom_right_aligned(T, extra):
    S = T + extra                                   # S - T keys already cached before the T new queries
    mask = causal_mask(T, S)
    for i in range(T):
        for j in range(S):
            assert bool(mask[i, j]) == (j <= i + S - T)
    # The last query sees every key; with no cache it is the ordinary lower triangle.
    assert mask[-1].all()
    assert torch.equal(causal_mask(T, T), torch.ones(T, T, dtype=torch.bool).tril())


def test_one_new_query_sees_all_cached_keys():
    # The "known bug": tril(ones(1, S)) would let the single new query see key 0 only.
    assert causal_mask(1, 5).tolist() == [[True] * 5]
    with pytest.raises(ValueError, match="T"):
        causal_mask(3, 2)


def test_causal_padding_mask_combines_both():
    real = torch.tensor([[True, True, True, False], [False, True, True, True]])   # (B, S) keys
    mask = causal_padding_mask(real, T=2)                                      # last 2 of 4 positions
    assert mask.tolist() == [
        [[True, True, True, False], [True, True, True, False]],
        [[False, True, True, False], [False, True, True, True]],
    ]


def test_padding_mask():
    ids = torch.tensor([[5, 6, 0, 0], [0, 7, 8, 9]])
    assert padding_mask(ids, 0).tolist() == [[True, True, False, False], [False, True, True, True]]
    with pytest.raises(ValueError, match="ids"):
        padding_mask(ids[0], 0)


# ---------------------------------------------------------------------------------------------------------
# MultiHeadAttention vs torch.nn.MultiheadAttention
# ---------------------------------------------------------------------------------------------------------
def copy_into_torch_mha(ours: MultiHeadAttention, bias: bool) -> nn.MultiheadAttention:
    C = ours.d_model
    ref = nn.MultiheadAttention(C, ours.n_heads, bias=bias, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([ours.q_proj.weight, ours.k_proj.weight, ours.v_proj.weight]))
        ref.out_proj.weight.copy_(ours.out_proj.weight)
        if bias:
            ref.in_proj_bias.copy_(torch.cat([ours.q_proj.bias, ours.k_proj.bias, ours.v_proj.bias]))
            ref.out_proj.bias.copy_(ours.out_proj.bias)
    return ref.eval()


@given(B=st.integers(1, 3), T=st.integers(1, 6), S=st.integers(1, 6), H=st.sampled_from([1, 2, 4]),
       cross=st.booleans(), causal=st.booleans(), bias=st.booleans(), fused=st.booleans(),
       seed=st.integers(0, 2**16))
def test_mha_matches_torch_multihead_attention(B, T, S, H, cross, causal, bias, fused, seed):
    torch.manual_seed(seed)
    C = 8
    ours = MultiHeadAttention(C, H, bias=bias, fused=fused).eval()
    ref = copy_into_torch_mha(ours, bias)
    gen = torch.Generator().manual_seed(seed)
    x_q = torch.randn(B, T, C, generator=gen)
    x_kv = torch.randn(B, S, C, generator=gen) if cross else x_q
    S_kv = x_kv.size(1)
    valid = random_lengths_mask(gen, B, S_kv)                    # (B, S_kv) True = real, >= 1 per row
    if causal and not cross:
        valid[:, 0] = True                                       # query 0 must still see a key
        mask = causal_mask(T, T) & valid[:, None, :]             # (B, T, T)
        attn_mask = ~causal_mask(T, T)                           # torch: True = NOT allowed
    else:
        mask = valid[:, None, :]                                 # (B, 1, S)
        attn_mask = None
    y, w = ours(x_q, x_kv, mask, need_weights=True)
    y_only = ours(x_q, x_kv, mask)
    # torch's key_padding_mask is inverted: True means "ignore this key".
    y_ref, w_ref = ref(x_q, x_kv, x_kv, key_padding_mask=~valid, attn_mask=attn_mask,
                       need_weights=True, average_attn_weights=False)
    assert torch.allclose(y, y_ref, **TOL)
    assert torch.allclose(y_only, y_ref, **TOL)
    assert torch.allclose(w, w_ref, **TOL)


@given(seed=st.integers(0, 2**16), cross=st.booleans())
@settings(max_examples=10)
def test_mha_fused_and_hand_written_same_gradients(seed, cross):
    torch.manual_seed(seed)
    hand = MultiHeadAttention(16, 4, fused=False)
    fused = MultiHeadAttention(16, 4, fused=True)
    fused.load_state_dict(hand.state_dict())
    gen = torch.Generator().manual_seed(seed)
    x_q = torch.randn(2, 5, 16, generator=gen)
    x_kv = torch.randn(2, 7, 16, generator=gen) if cross else x_q
    mask = random_lengths_mask(gen, 2, x_kv.size(1), allow_empty=True)[:, None, :]
    for module in (hand, fused):
        module(x_q, x_kv, mask).pow(2).sum().backward()
    for (name, p_hand), p_fused in zip(hand.named_parameters(), fused.parameters()):
        assert torch.allclose(p_hand.grad, p_fused.grad, **TOL), name


def test_mha_rejects_bad_width_and_heads():
    with pytest.raises(ValueError, match="divisible"):
        MultiHeadAttention(10, 4)
    with pytest.raises(ValueError, match="d_model"):
        MultiHeadAttention(8, 2)(torch.randn(1, 3, 6), torch.randn(1, 3, 6))


# ---------------------------------------------------------------------------------------------------------
# KV cache
# ---------------------------------------------------------------------------------------------------------
@given(T=st.integers(1, 7), chunk=st.integers(1, 3), fused=st.booleans(), seed=st.integers(0, 2**16))
@settings(max_examples=15)
def test_self_attention_cache_equals_full_causal_pass(T, chunk, fused, seed):
    torch.manual_seed(seed)
    mha = MultiHeadAttention(8, 2, fused=fused).eval()
    x = torch.randn(2, T, 8)
    full = mha(x, x, causal_mask(T, T))                          # (B, T, C)
    cache, outs = KVCache(), []
    for start in range(0, T, chunk):                             # feed `chunk` new positions at a time
        x_new = x[:, start:start + chunk]
        n_keys = cache.length + x_new.size(1)
        outs.append(mha(x_new, x_new, causal_mask(x_new.size(1), n_keys), cache=cache))
    assert cache.length == T
    assert torch.allclose(torch.cat(outs, dim=1), full, **TOL)


def test_cross_attention_cache_is_computed_once_and_reused():
    torch.manual_seed(0)
    mha = MultiHeadAttention(8, 2).eval()
    enc_out, x_q = torch.randn(2, 5, 8), torch.randn(2, 3, 8)
    mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])[:, None, :]
    expected = mha(x_q, enc_out, mask)
    cache = mha.kv_cache(enc_out)
    # Once the cache is made, the key/value projections are never used again: wreck them, nothing changes.
    with torch.no_grad():
        for lin in (mha.k_proj, mha.v_proj):
            lin.weight.fill_(float("nan"))
            lin.bias.fill_(float("nan"))
    y = mha(x_q, None, mask, cache=cache, kv_from_cache=True)
    assert cache.length == 5                                     # read, not appended to
    assert torch.allclose(y, expected, **TOL)
    with pytest.raises(ValueError, match="cache"):
        mha(x_q, None, mask, kv_from_cache=True)


def test_kv_cache_reorder_selects_batch_rows():
    k, v = torch.randn(3, 2, 4, 5), torch.randn(3, 2, 4, 5)
    cache = KVCache()
    cache.append(k, v)
    cache.reorder(torch.tensor([2, 0, 0]))
    assert torch.equal(cache.k, k[[2, 0, 0]]) and torch.equal(cache.v, v[[2, 0, 0]])
    k2, v2 = torch.randn(3, 2, 1, 5), torch.randn(3, 2, 1, 5)
    all_k, all_v = cache.append(k2, v2)
    assert all_k.shape == (3, 2, 5, 5) and torch.equal(all_v[:, :, -1:], v2)
