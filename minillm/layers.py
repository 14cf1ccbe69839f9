"""Building blocks of a transformer layer: norms, feed-forward networks, DropPath, LayerScale,
positions.

Each hand-written norm sits next to PyTorch's fused op, chosen by `fused`; tests/test_layers.py
proves they agree. Shape symbols: B batch, L any sequence length (S or T), C model width, H heads,
D head width.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

Tensor = torch.Tensor


# --------------------------------------------------------------------------------------------------
# Normalisation
# --------------------------------------------------------------------------------------------------
class LayerNorm(nn.Module):
    """y = (x - mean) / sqrt(var + eps) * γ + β over the last dimension (Ba et al. 2016).

    var is the biased (population) variance, as in torch.nn.LayerNorm.
    """

    def __init__(self, d_model: int, eps: float = 1e-5, fused: bool = True):
        super().__init__()
        self.eps, self.fused = eps, fused
        self.weight = nn.Parameter(torch.ones(d_model))    # γ: starts as the identity scale
        self.bias = nn.Parameter(torch.zeros(d_model))     # β

    def forward(self, x: Tensor) -> Tensor:                # (..., C) -> (..., C)
        if self.fused:
            return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)
        # Mean and biased variance (divide by C, not C - 1) over the last dimension, in one pass.
        var, mean = torch.var_mean(x, dim=-1, correction=0, keepdim=True)    # (..., 1) each
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias


class RMSNorm(nn.Module):
    """y = x / sqrt(mean(x²) + eps) * γ (Zhang & Sennrich 2019).

    LayerNorm without centring or β."""

    def __init__(self, d_model: int, eps: float = 1e-5, fused: bool = True):
        super().__init__()
        self.eps, self.fused = eps, fused
        self.weight = nn.Parameter(torch.ones(d_model))    # γ

    def forward(self, x: Tensor) -> Tensor:                # (..., C) -> (..., C)
        if self.fused:
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)
        return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps) * self.weight


def make_norm(kind: str, d_model: int, eps: float, fused: bool) -> nn.Module:
    if kind == "layernorm":
        return LayerNorm(d_model, eps, fused)
    if kind == "rmsnorm":
        return RMSNorm(d_model, eps, fused)
    raise ValueError(f"norm must be 'layernorm' or 'rmsnorm', got {kind!r}")


# --------------------------------------------------------------------------------------------------
# Feed-forward networks
# --------------------------------------------------------------------------------------------------
class FeedForward(nn.Module):
    """FFN(x) = W₂ dropout(GELU(W₁ x)): the position-wise network of Vaswani et al. 2017
    (eq. 2), with GELU (Hendrycks & Gimpel 2016) in place of ReLU, as BERT and GPT do."""

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        self.w1 = nn.Linear(d_model, d_ff, bias=bias)      # C -> d_ff
        self.w2 = nn.Linear(d_ff, d_model, bias=bias)      # d_ff -> C
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:                # (B, L, C) -> (B, L, C)
        return self.w2(self.dropout(F.gelu(self.w1(x))))


def swiglu_hidden(d_ff: int, multiple: int = 64) -> int:
    """Hidden width of a SwiGLU with the same parameter count as a GELU FFN of width d_ff.

    GELU FFN: 2·C·d_ff weights; SwiGLU: 3·C·h. Equal when h = 2/3·d_ff (= 8/3·C for the usual
    d_ff = 4C), rounded to the nearest multiple of 64 so the matmuls tile well (Shazeer 2020, §2).
    """
    return max(multiple, multiple * round(2 * d_ff / 3 / multiple))


class SwiGLU(nn.Module):
    """FFN_SwiGLU(x) = W₃ (SiLU(W₁ x) ⊙ W₂ x) (Shazeer 2020, eq. 6; Swish_1 = SiLU).

    W₁ is the gate, W₂ the value, W₃ the output projection; the hidden width comes from
    `swiglu_hidden`.
    """

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        hidden = swiglu_hidden(d_ff)
        self.w1 = nn.Linear(d_model, hidden, bias=bias)    # gate: C -> h
        self.w2 = nn.Linear(d_model, hidden, bias=bias)    # value: C -> h
        self.w3 = nn.Linear(hidden, d_model, bias=bias)    # out: h -> C
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:                # (B, L, C) -> (B, L, C)
        return self.w3(self.dropout(F.silu(self.w1(x)) * self.w2(x)))


def make_ffn(kind: str, d_model: int, d_ff: int, dropout: float, bias: bool) -> nn.Module:
    if kind == "gelu":
        return FeedForward(d_model, d_ff, dropout, bias)
    if kind == "swiglu":
        return SwiGLU(d_model, d_ff, dropout, bias)
    raise ValueError(f"ffn must be 'gelu' or 'swiglu', got {kind!r}")


# --------------------------------------------------------------------------------------------------
# Residual-branch regularisers
# --------------------------------------------------------------------------------------------------
class DropPath(nn.Module):
    """Stochastic depth (Huang et al. 2016): in training, drop a residual branch for a whole sample.

    Each sample keeps its branch with probability keep = 1 - p; a kept branch is scaled by 1/keep so
    the expected output is unchanged (like inverted dropout). In eval mode it is the identity. The
    rate should grow linearly with depth (Huang et al. 2016, §3, "linear decay rule"); the model
    sets it per layer.
    """

    def __init__(self, p: float = 0.0):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"DropPath probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: Tensor) -> Tensor:                # (B, ...) -> (B, ...)
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        # One Bernoulli draw per sample, broadcast over its other dimensions: all-or-nothing.
        shape = (x.size(0),) + (1,) * (x.dim() - 1)        # (B, 1, 1)
        mask = torch.empty(shape, dtype=x.dtype, device=x.device).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class LayerScale(nn.Module):
    """y = γ ⊙ x with a learned per-channel γ initialised small
    (Touvron et al. 2021, CaiT, §2.1): each residual branch starts close to the identity, which
    steadies the start of training."""

    def __init__(self, d_model: int, init: float):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((d_model,), float(init)))   # (C,)

    def forward(self, x: Tensor) -> Tensor:                # (B, L, C) -> (B, L, C)
        return x * self.gamma


# --------------------------------------------------------------------------------------------------
# Positions
# --------------------------------------------------------------------------------------------------
def sinusoidal_table(max_len: int, d_model: int) -> Tensor:
    """PE[pos, 2i] = sin(pos / 10000^(2i/C)), PE[pos, 2i+1] = cos(pos / 10000^(2i/C))
    (Vaswani et al. 2017, §3.5). Returns (max_len, C)."""
    if d_model % 2 != 0:
        raise ValueError(f"sinusoidal positions need an even d_model, got {d_model}")
    pos = torch.arange(max_len, dtype=torch.float64).unsqueeze(1)               # (max_len, 1)
    # 1 / 10000^(2i/C), (C/2,)
    inv_freq = 10000.0 ** (-torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
    angle = pos * inv_freq                                                      # (max_len, C/2)
    table = torch.empty(max_len, d_model, dtype=torch.float64)
    table[:, 0::2] = torch.sin(angle)
    table[:, 1::2] = torch.cos(angle)
    return table.float()   # computed in float64 so large positions keep their precision


class SinusoidalPositionalEncoding(nn.Module):
    """Adds the fixed sinusoidal table, times `scale`, to token embeddings, starting at a given
    position (for the cache). The model chooses `scale` so that positions and tokens start at the
    same size (model.py).

    The table is a non-persistent buffer: it is recomputed on construction, so it is not in
    checkpoints.
    """

    def __init__(self, d_model: int, max_len: int, scale: float = 1.0):
        super().__init__()
        self.max_len, self.scale = max_len, scale
        self.register_buffer("table", sinusoidal_table(max_len, d_model) * scale,
                             persistent=False)

    def forward(self, x: Tensor, start: int = 0) -> Tensor:   # (B, L, C) -> (B, L, C)
        L = x.size(1)
        if start + L > self.max_len:
            raise ValueError(f"sequence reaches position {start + L}, "
                             f"beyond max_len = {self.max_len}")
        return x + self.table[start:start + L].to(x.dtype)   # (L, C) broadcast over B


class RotaryEmbedding(nn.Module):
    """Rotary position embedding, RoPE (Su et al. 2021, eq. 34): rotate each pair of query/key
    channels by an angle proportional to the position, so q·k depends only on the relative offset
    of the two positions.

    Departure from the paper: the pairs are (x[i], x[i + D/2]) ("rotate half", as GPT-NeoX and
    LLaMA) rather than adjacent channels (x[2i], x[2i+1]); it is the same rotation on a permuted
    basis and needs no interleaving. Applied inside self-attention, after the head split.
    """

    def __init__(self, head_dim: int, max_len: int, base: float = 10000.0):
        super().__init__()
        if head_dim % 2 != 0:
            raise ValueError(f"RoPE needs an even head width, got {head_dim}")
        self.max_len = max_len
        # θ_i = base^(-2i/D), (D/2,)
        inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
        # (max_len, 1) * (D/2,) -> (max_len, D/2)
        angle = torch.arange(max_len, dtype=torch.float64).unsqueeze(1) * inv_freq
        angle = torch.cat([angle, angle], dim=-1)                               # (max_len, D)
        self.register_buffer("cos", angle.cos().float(), persistent=False)
        self.register_buffer("sin", angle.sin().float(), persistent=False)

    def forward(self, x: Tensor, start: int = 0) -> Tensor:   # (B, H, L, D) -> (B, H, L, D)
        L = x.size(-2)
        half = x.size(-1) // 2
        if start + L > self.max_len:
            raise ValueError(f"sequence reaches position {start + L}, "
                             f"beyond max_len = {self.max_len}")
        cos = self.cos[start:start + L].to(x.dtype)          # (L, D)
        sin = self.sin[start:start + L].to(x.dtype)          # (L, D)
        # (B, H, L, D): (x1, x2) -> (-x2, x1)
        rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
        return x * cos + rotated * sin                        # [x1 cos - x2 sin, x2 cos + x1 sin]
