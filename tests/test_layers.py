"""Specification of minillm.layers: norms vs PyTorch, SwiGLU and GELU FFN vs their formulas, DropPath,
LayerScale, sinusoidal positions and RoPE vs their formulas. fp32 tolerance 1e-5."""
import math

import pytest
import torch
import torch.nn as nn
from hypothesis import given, settings
from hypothesis import strategies as st

from minillm.layers import (DropPath, FeedForward, LayerNorm, LayerScale, RMSNorm, RotaryEmbedding,
                            SinusoidalPositionalEncoding, SwiGLU, make_ffn, make_norm, sinusoidal_table,
                            swiglu_hidden)

TOL = dict(atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------------------
# Norms
# ---------------------------------------------------------------------------------------------------------
@given(C=st.integers(4, 32), rows=st.integers(1, 6), scale=st.floats(0.01, 100.0), seed=st.integers(0, 2**16))
def test_layernorm_matches_torch_both_paths(C, rows, scale, seed):
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn(rows, 3, C, generator=gen) + 1.0) * scale   # off-centre, so centring matters
    ref = nn.LayerNorm(C, eps=1e-5)
    with torch.no_grad():
        ref.weight.copy_(torch.randn(C, generator=gen))
        ref.bias.copy_(torch.randn(C, generator=gen))
    upstream = torch.randn(rows, 3, C, generator=gen)
    x_ref = x.clone().requires_grad_(True)
    (ref(x_ref) * upstream).sum().backward()
    for fused in (False, True):
        ours = LayerNorm(C, eps=1e-5, fused=fused)
        ours.load_state_dict(ref.state_dict())
        x_ours = x.clone().requires_grad_(True)
        y = ours(x_ours)
        assert torch.allclose(y, ref(x), **TOL)
        (y * upstream).sum().backward()
        # Gradients are compared relative to their largest entry: dL/dx is a difference of terms of size
        # |γ|/σ that cancel, so its absolute fp32 error scales with that size, not with the result.
        g_scale = x_ref.grad.abs().max().item() + 1.0 / scale
        assert torch.allclose(x_ours.grad, x_ref.grad, atol=1e-5 * g_scale, rtol=1e-5)
        assert torch.allclose(ours.weight.grad, ref.weight.grad, **TOL)


@given(C=st.integers(1, 32), rows=st.integers(1, 6), scale=st.floats(0.01, 100.0), seed=st.integers(0, 2**16))
def test_rmsnorm_matches_torch_both_paths(C, rows, scale, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, 3, C, generator=gen) * scale
    ref = nn.RMSNorm(C, eps=1e-5)
    with torch.no_grad():
        ref.weight.copy_(torch.randn(C, generator=gen))
    for fused in (False, True):
        ours = RMSNorm(C, eps=1e-5, fused=fused)
        ours.load_state_dict(ref.state_dict())
        assert torch.allclose(ours(x), ref(x), **TOL)
    # The formula, once more by hand: x / sqrt(mean(x²) + eps) · γ.
    rms = torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5)
    assert torch.allclose(RMSNorm(C, 1e-5, fused=False)(x), x / rms, **TOL)


def test_make_norm_rejects_unknown_kind():
    assert isinstance(make_norm("rmsnorm", 4, 1e-5, True), RMSNorm)
    with pytest.raises(ValueError, match="norm"):
        make_norm("batchnorm", 4, 1e-5, True)


# ---------------------------------------------------------------------------------------------------------
# Feed-forward networks
# ---------------------------------------------------------------------------------------------------------
@given(C=st.sampled_from([8, 16]), d_ff=st.sampled_from([32, 64, 100]), seed=st.integers(0, 2**16))
@settings(max_examples=10)
def test_swiglu_equals_its_formula(C, d_ff, seed):
    torch.manual_seed(seed)
    ffn = SwiGLU(C, d_ff).eval()
    x = torch.randn(2, 3, C)
    W1, b1 = ffn.w1.weight, ffn.w1.bias
    W2, b2 = ffn.w2.weight, ffn.w2.bias
    W3, b3 = ffn.w3.weight, ffn.w3.bias
    a = x @ W1.T + b1
    swish = a * torch.sigmoid(a)                               # SiLU(a) = a·σ(a) (Swish with β = 1)
    expected = (swish * (x @ W2.T + b2)) @ W3.T + b3           # Shazeer 2020: W₃(SiLU(W₁x) ⊙ W₂x)
    assert torch.allclose(ffn(x), expected, **TOL)


def test_gelu_ffn_equals_its_formula():
    torch.manual_seed(0)
    ffn = FeedForward(8, 32).eval()
    x = torch.randn(2, 3, 8)
    h = x @ ffn.w1.weight.T + ffn.w1.bias
    gelu = 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))          # exact GELU: x·Φ(x)
    assert torch.allclose(ffn(x), gelu @ ffn.w2.weight.T + ffn.w2.bias, **TOL)


@given(C=st.sampled_from([64, 128, 256, 512, 768, 1024]), mult=st.sampled_from([2, 4]))
def test_swiglu_hidden_matches_gelu_parameter_count(C, mult):
    d_ff = mult * C
    h = swiglu_hidden(d_ff)
    assert h % 64 == 0
    gelu = sum(p.numel() for p in FeedForward(C, d_ff, bias=False).parameters())   # 2·C·d_ff
    swiglu = sum(p.numel() for p in SwiGLU(C, d_ff, bias=False).parameters())      # 3·C·h
    # Equal up to the rounding of h to a multiple of 64 (at most half a step, 32 columns of 3 matrices).
    assert abs(swiglu - gelu) <= 3 * C * 32
    if d_ff >= 1024:
        assert abs(swiglu - gelu) / gelu < 0.05                 # the rounding matters less as C grows
    if mult == 4:
        assert abs(h - 8 * C / 3) <= 32                        # the familiar ≈ 8/3·C


def test_make_ffn_rejects_unknown_kind():
    with pytest.raises(ValueError, match="ffn"):
        make_ffn("relu2", 8, 32, 0.0, True)


# ---------------------------------------------------------------------------------------------------------
# DropPath and LayerScale
# ---------------------------------------------------------------------------------------------------------
def test_droppath_is_identity_in_eval_and_at_zero():
    x = torch.randn(8, 5, 4)
    assert torch.equal(DropPath(0.5).eval()(x), x)
    assert torch.equal(DropPath(0.0).train()(x), x)
    with pytest.raises(ValueError, match="DropPath"):
        DropPath(1.0)


@given(p=st.floats(0.1, 0.9), seed=st.integers(0, 2**16))
@settings(max_examples=10)
def test_droppath_is_per_sample_all_or_nothing(p, seed):
    torch.manual_seed(seed)
    x = torch.rand(64, 5, 4) + 0.5                              # no zeros of its own
    y = DropPath(p).train()(x)
    for i in range(x.size(0)):
        kept = torch.allclose(y[i], x[i] / (1 - p), **TOL)
        dropped = torch.equal(y[i], torch.zeros_like(y[i]))
        assert kept != dropped                                  # exactly one of the two, for the whole sample


def test_droppath_preserves_the_expectation():
    torch.manual_seed(0)
    p, n = 0.3, 200_000
    x = torch.full((n, 1), 2.0)
    y = DropPath(p).train()(x)
    # Mean of n i.i.d. samples: std of one is 2·sqrt(p / (1 - p)) ≈ 1.31, so the mean's std is ≈ 0.003.
    assert abs(y.mean().item() - 2.0) < 0.02
    assert abs((y == 0).float().mean().item() - p) < 0.01


def test_layerscale_multiplies_by_gamma():
    ls = LayerScale(4, 1e-4)
    assert torch.equal(ls.gamma.detach(), torch.full((4,), 1e-4))
    with torch.no_grad():
        ls.gamma.copy_(torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert torch.equal(ls(torch.ones(2, 1, 4)), torch.tensor([1.0, 2.0, 3.0, 4.0]).expand(2, 1, 4))


# ---------------------------------------------------------------------------------------------------------
# Positions
# ---------------------------------------------------------------------------------------------------------
def test_sinusoidal_table_matches_the_formula():
    C, max_len = 10, 50
    table = sinusoidal_table(max_len, C)
    for pos in range(max_len):
        for i in range(C // 2):
            angle = pos / 10000 ** (2 * i / C)                  # Vaswani et al. 2017, §3.5
            assert abs(table[pos, 2 * i].item() - math.sin(angle)) < 1e-6
            assert abs(table[pos, 2 * i + 1].item() - math.cos(angle)) < 1e-6


def test_sinusoidal_encoding_adds_rows_from_start_and_checks_length():
    pe = SinusoidalPositionalEncoding(8, max_len=6)
    x = torch.zeros(2, 3, 8)
    assert torch.equal(pe(x, start=2), pe.table[2:5].expand(2, 3, 8))
    assert "table" not in pe.state_dict()                       # recomputed, never stored in checkpoints
    with pytest.raises(ValueError, match="max_len"):
        pe(x, start=4)
    with pytest.raises(ValueError, match="even"):
        sinusoidal_table(4, 7)


def test_rope_matches_the_formula():
    D, L = 6, 5
    rope = RotaryEmbedding(D, max_len=16)
    x = torch.randn(1, 1, L, D)
    start = 3
    y = rope(x, start)
    half = D // 2
    for t in range(L):
        m = start + t                                           # absolute position
        for i in range(half):
            theta = m * 10000 ** (-2 * i / D)                   # Su et al. 2021: θ_i = 10000^(-2i/D)
            x1, x2 = x[0, 0, t, i].item(), x[0, 0, t, i + half].item()
            assert abs(y[0, 0, t, i].item() - (x1 * math.cos(theta) - x2 * math.sin(theta))) < 1e-5
            assert abs(y[0, 0, t, i + half].item() - (x2 * math.cos(theta) + x1 * math.sin(theta))) < 1e-5


@given(m=st.integers(0, 40), n=st.integers(0, 40), shift=st.integers(0, 20), seed=st.integers(0, 2**16))
def test_rope_scores_depend_only_on_relative_position(m, n, shift, seed):
    gen = torch.Generator().manual_seed(seed)
    rope = RotaryEmbedding(8, max_len=64)
    q, k = torch.randn(1, 1, 1, 8, generator=gen), torch.randn(1, 1, 1, 8, generator=gen)
    score = (rope(q, m) * rope(k, n)).sum()
    shifted = (rope(q, m + shift) * rope(k, n + shift)).sum()
    assert torch.allclose(score, shifted, atol=1e-4)            # positions up to 60: angles of ~60 rad in fp32
    assert torch.allclose(rope(q, m).norm(), q.norm(), **TOL)   # a rotation keeps the length
    with pytest.raises(ValueError, match="max_len"):
        rope(q, 64)
