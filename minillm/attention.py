"""Attention: scaled dot-product, multi-head, masks and the key/value cache for incremental
decoding.

One mask convention for the whole package, stated here once:

    a boolean mask where True means "this query may attend to this key" (or, for a padding mask,
    "this is a real token"), exactly as torch.nn.functional.scaled_dot_product_attention reads it.

Masks broadcast to (..., T, S): T queries (rows) against S keys (columns). Converting at the
boundaries: torch.nn.MultiheadAttention's `key_padding_mask` means the opposite (True = ignore), so
pass it `~mask`.

Shape symbols (used in every comment): B batch, S source length, T target length, C model width,
H heads, D head width (C = H * D). Queries are target positions (T); keys are the source in
cross-attention (S) and the target in self-attention (T, or T_all = cached + new positions when
decoding with a cache). L is a length that is S or T, in code that serves both (a projection, a
cache). The functions below take any key length; their docstrings call it S, as torch's
documentation does.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

Tensor = torch.Tensor


# --------------------------------------------------------------------------------------------------
# Masks
# --------------------------------------------------------------------------------------------------
def padding_mask(ids: Tensor, pad_id: int) -> Tensor:
    """(B, S) int ids -> (B, S) bool, True where the token is real (not padding)."""
    if ids.dim() != 2:
        raise ValueError(f"padding_mask: ids must be (B, S), got shape {tuple(ids.shape)}")
    return ids != pad_id


def causal_mask(T: int, S: int, device=None) -> Tensor:
    """(T, S) bool, True where query i may see key j, i.e. j <= i + (S - T).

    subtle: the mask is aligned to the bottom-right corner. Without a cache T == S and this is the
    usual lower-triangular square. With a cache, the T new queries are the LAST T positions of the S
    keys, so query i sits at absolute position i + (S - T); a top-left-aligned mask
    (torch.tril(ones(T, S))) would let the single new query of a decoding step see only key 0 — a
    known bug in other libraries.
    """
    if T > S:
        raise ValueError(f"causal_mask: T (queries) = {T} must be <= S (keys) = {S}")
    return torch.ones(T, S, dtype=torch.bool, device=device).tril(diagonal=S - T)


def causal_padding_mask(key_is_real: Tensor, T: int) -> Tensor:
    """Decoder self-attention mask: causal AND key padding combined.

    key_is_real: (B, S) bool, True = real token, for all S keys (cached ones first); T: number of
    new queries, the last T of the S positions. Returns (B, T, S): query i sees real keys
    j <= i + (S - T).
    """
    S = key_is_real.size(1)
    # (T, S) & (B, 1, S) -> (B, T, S)
    return causal_mask(T, S, key_is_real.device) & key_is_real[:, None, :]


# --------------------------------------------------------------------------------------------------
# Scaled dot-product attention
# --------------------------------------------------------------------------------------------------
def scaled_dot_product_attention(q: Tensor, k: Tensor, v: Tensor, mask: Optional[Tensor] = None,
                                 dropout_p: float = 0.0) -> tuple[Tensor, Tensor]:
    """Attention(Q, K, V) = softmax(Q Kᵀ / √D) V, written out (Vaswani et al. 2017, eq. 1).

    q: (..., T, D); k, v: (..., S, D); mask: bool broadcastable to (..., T, S), True = may attend.
    Returns out (..., T, D) and the attention weights (..., T, S) (after dropout, as they were
    used).
    A query row whose keys are all masked gets all-zero weights and a zero output — never NaN.
    dropout_p is applied as given: the caller passes 0.0 in eval mode (as with the fused op).
    """
    D = q.size(-1)
    scores = q @ k.transpose(-2, -1)                      # (..., T, D) @ (..., D, S) -> (..., T, S)
    scores = scores * (1.0 / math.sqrt(D))                # Vaswani et al. 2017, eq. 1: 1/√D
    if mask is not None:
        if mask.dtype != torch.bool:
            raise TypeError(f"mask must be a bool tensor (True = may attend), got {mask.dtype}")
        # subtle: a finite "minus infinity". With -inf, a row with every key masked would softmax
        # to exp(-inf)/sum(exp(-inf)) = 0/0 = NaN, and the NaN would leak into the gradients as
        # well. With the dtype's lowest finite value the row becomes uniform instead, and we zero it
        # below.
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    weights = torch.softmax(scores, dim=-1)               # (..., T, S); each row sums to 1
    if mask is not None:
        # A fully masked query row attends to nothing: zero weights, hence a zero output.
        has_key = mask.any(dim=-1, keepdim=True)          # (..., T, 1)
        weights = weights * has_key
    if dropout_p > 0.0:
        # Vaswani et al. 2017, §5.4 (attention dropout)
        weights = F.dropout(weights, p=dropout_p)
    out = weights @ v                                     # (..., T, S) @ (..., S, D) -> (..., T, D)
    return out, weights


def fused_scaled_dot_product_attention(q: Tensor, k: Tensor, v: Tensor,
                                       mask: Optional[Tensor] = None,
                                       dropout_p: float = 0.0) -> Tensor:
    """The same computation through PyTorch's fused kernel (flash / memory-efficient / math
    backends).

    Returns only out (..., T, D): the fused kernels never materialise the weights.
    subtle: depending on the backend, a fully masked row comes back as NaN (the math backend) or as
    whatever the kernel leaves there. We let such rows attend to every key (so nothing in the kernel
    divides by zero, forward or backward) and then overwrite their output with zeros, which matches
    the hand-written path in value and in gradient (the zeroed rows pass no gradient back).
    """
    if mask is None:
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor (True = may attend), got {mask.dtype}")
    has_key = mask.any(dim=-1, keepdim=True)              # (..., T, 1)
    safe_mask = mask | ~has_key                           # (..., T, S): empty rows see everything
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=safe_mask, dropout_p=dropout_p)
    return out.masked_fill(~has_key, 0.0)                 # (..., T, D)


# --------------------------------------------------------------------------------------------------
# Key/value cache for incremental decoding
# --------------------------------------------------------------------------------------------------
class KVCache:
    """Keys and values of one attention layer, kept between decoding steps.

    Decoder self-attention: starts empty and grows by the new positions at every step (`append`).
    Cross-attention: filled once from the encoder output (`MultiHeadAttention.kv_cache`) and only
    read. k, v: (B, H, L, D), L cached positions: S for cross-attention, T_all (all target positions
    so far) for self-attention.
    """

    def __init__(self, k: Optional[Tensor] = None, v: Optional[Tensor] = None):
        # Buffers (B, H, capacity, D), of which the first `length` positions are filled. Appending
        # one position with torch.cat would copy the whole cache at every step (O(T^2) over an
        # answer); instead the capacity doubles when full, so each position is copied about twice in
        # all (amortised O(1) per position), and new positions are written in place.
        self._k, self._v = k, v
        self._length = 0 if k is None else k.size(2)

    @property
    def k(self) -> Optional[Tensor]:
        if self._k is None:
            return None
        return self._k[:, :, :self._length]                 # (B, H, L, D), a view

    @property
    def v(self) -> Optional[Tensor]:
        if self._v is None:
            return None
        return self._v[:, :, :self._length]                 # (B, H, L, D), a view

    @property
    def length(self) -> int:
        return self._length

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Add the new positions (B, H, T_new, D) and return all keys and values
        (B, H, L + T_new, D)."""
        end = self._length + k.size(2)
        if self._k is None or end > self._k.size(2):                  # full: double the capacity
            capacity = max(end, 16, 2 * (0 if self._k is None else self._k.size(2)))
            grown_k = k.new_empty(k.size(0), k.size(1), capacity, k.size(3))  # (B, H, capacity, D)
            grown_v = v.new_empty(v.size(0), v.size(1), capacity, v.size(3))
            if self._length:
                grown_k[:, :, :self._length] = self.k
                grown_v[:, :, :self._length] = self.v
            self._k, self._v = grown_k, grown_v
        self._k[:, :, self._length:end] = k
        self._v[:, :, self._length:end] = v
        self._length = end
        return self.k, self.v

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows `index` (LongTensor (B',)), in that order: beam search reorders and
        expands."""
        if self._k is not None:
            # only the filled positions are copied: beam search reorders at every step
            self._k = self.k.index_select(0, index)         # (B', H, L, D)
            self._v = self.v.index_select(0, index)         # (B', H, L, D)


# --------------------------------------------------------------------------------------------------
# Multi-head attention
# --------------------------------------------------------------------------------------------------
class MultiHeadAttention(nn.Module):
    """MultiHead(Q, K, V) = Concat(head_1..head_H) W_O,
    head_h = Attention(Q W_Q^h, K W_K^h, V W_V^h) (Vaswani et al. 2017, §3.2.2).

    One module serves three modes, each in its own method below: self-attention (encoder, or
    decoder with a causal mask and a growing cache), cross-attention (queries from the decoder,
    keys/values from the encoder, of a different length), and cross-attention while decoding
    (keys/values read from a cache made once). `fused=True` runs PyTorch's fused kernel;
    `fused=False` the hand-written `scaled_dot_product_attention` above. Both give the same result
    (tests/test_attention.py). When attention weights are requested (the GUI heatmap), the call
    takes the hand-written path, since the fused kernels never form the weights.
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float = 0.0, bias: bool = True,
                 fused: bool = True):
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.d_model = d_model
        self.n_heads = n_heads
        self.head_dim = d_model // n_heads
        self.dropout = dropout
        self.fused = fused
        # Four separate projections, named as in torch.nn.MultiheadAttention's unpacked form, so
        # weights can be copied one to one in tests.
        self.q_proj = nn.Linear(d_model, d_model, bias=bias)
        self.k_proj = nn.Linear(d_model, d_model, bias=bias)
        self.v_proj = nn.Linear(d_model, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)

    # --- heads and projections --------------------------------------------------------------------
    def _split_heads(self, x: Tensor) -> Tensor:
        """Give each head its own D channels, as a batch dimension the attention kernels read."""
        B, L, C = x.shape
        # view is free (no copy); the transpose makes a strided view the attention kernels accept.
        # (B, L, C) -> (B, L, H, D) -> (B, H, L, D)
        return x.view(B, L, self.n_heads, self.head_dim).transpose(1, 2)

    def _merge_heads(self, out: Tensor) -> Tensor:
        """Concatenate the heads again (the Concat of §3.2.2), ready for the output projection."""
        B, H, T, D = out.shape
        # (B, H, T, D) -> (B, T, H, D) -> (B, T, C)
        return out.transpose(1, 2).reshape(B, T, self.d_model)

    def _project_fused(self, x: Tensor, *linears: nn.Linear) -> tuple[Tensor, ...]:
        """The n projections as ONE matmul on their stacked weights: while training, one large
        matmul keeps the cores busier than n small ones (the same numbers, up to float rounding)."""
        weight = torch.cat([lin.weight for lin in linears])             # (n·C, C)
        bias = None
        if linears[0].bias is not None:
            bias = torch.cat([lin.bias for lin in linears])             # (n·C,)
        # (B, L, C) @ (C, n·C) -> (B, L, n·C) -> n × (B, L, C)
        return F.linear(x, weight, bias).split(self.d_model, dim=-1)

    def _project(self, x: Tensor, *linears: nn.Linear) -> tuple[Tensor, ...]:
        """Apply several of the projections to the same input: self-attention projects q, k, v of x,
        cross-attention k, v of the source. The weights stay four separate nn.Linear, as the
        interface promises."""
        if torch.is_grad_enabled():
            return self._project_fused(x, *linears)
        # Without gradients (evaluation, decoding) each nn.Linear runs on its own: stacking copies
        # the n weight matrices at every call, which for one decoded token is as much memory traffic
        # as the matmul itself.
        return tuple(lin(x) for lin in linears)                          # n × (B, L, C)

    def kv_cache(self, x_kv: Tensor) -> KVCache:
        """Project a source (B, S, C) to keys and values once, for cross-attention during
        decoding."""
        k, v = self._project(x_kv, self.k_proj, self.v_proj)            # (B, S, C) each
        return KVCache(self._split_heads(k), self._split_heads(v))      # (B, H, S, D) each

    # --- the three modes: queries, keys and values ------------------------------------------------
    def _rotate_and_cache(self, q: Tensor, k: Tensor, v: Tensor, cache: Optional[KVCache],
                          rotary: Optional[Callable[[Tensor, int], Tensor]]):
        """Place the new positions in the sequence: RoPE turns q and k by their absolute positions,
        and while decoding the new keys/values join the cache, so the queries see every one."""
        if rotary is not None:
            start = cache.length if cache is not None else 0            # first new position
            q = rotary(q, start)                                        # Su et al. 2021, RoPE
            k = rotary(k, start)
        if cache is not None:
            k, v = cache.append(k, v)                                   # (B, H, T_all, D)
        return q, k, v

    def _self_attention_qkv(self, x: Tensor, cache: Optional[KVCache],
                            rotary: Optional[Callable[[Tensor, int], Tensor]]):
        """Self-attention: q, k, v all from x (B, T, C), in one matmul while training. With a cache
        (decoding), the new keys/values are appended and every cached one is attended to."""
        q, k, v = self._project(x, self.q_proj, self.k_proj, self.v_proj)   # (B, T, C) each
        q = self._split_heads(q)                                        # (B, H, T, D)
        k = self._split_heads(k)                                        # (B, H, T, D) new keys
        v = self._split_heads(v)                                        # (B, H, T, D) new values
        return self._rotate_and_cache(q, k, v, cache, rotary)

    def _cross_attention_qkv(self, x_q: Tensor, x_kv: Tensor, cache: Optional[KVCache],
                             rotary: Optional[Callable[[Tensor, int], Tensor]]):
        """Cross-attention: queries from the decoder x_q (B, T, C), keys and values from the encoder
        output x_kv (B, S, C). The model passes no cache or rotary here; they act as in
        self-attention, for a caller that holds one sequence in two different tensors."""
        q = self.q_proj(x_q)                                            # (B, T, C)
        k, v = self._project(x_kv, self.k_proj, self.v_proj)            # (B, S, C) each
        q = self._split_heads(q)                                        # (B, H, T, D)
        k = self._split_heads(k)                                        # (B, H, S, D)
        v = self._split_heads(v)                                        # (B, H, S, D)
        return self._rotate_and_cache(q, k, v, cache, rotary)

    def _cached_cross_attention_qkv(self, x_q: Tensor, cache: Optional[KVCache]):
        """Cross-attention while decoding: the source's keys and values were projected once, by
        `kv_cache`, and are only read here."""
        if cache is None or cache.k is None:
            raise ValueError("kv_from_cache=True needs a filled cache (made by kv_cache)")
        q = self._split_heads(self.q_proj(x_q))                         # (B, T, C) -> (B, H, T, D)
        k, v = cache.k, cache.v                                         # (B, H, S, D) each
        return q, k, v

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Optional[Tensor],
                need_weights: bool) -> tuple[Tensor, Optional[Tensor]]:
        """All heads at once: out (B, H, T, D), and the weights (B, H, T, S) only when asked for,
        since only the hand-written path forms them."""
        if mask is not None:
            mask = mask.unsqueeze(-3)                                   # (B, T, S) -> (B, 1, T, S)
        dropout_p = self.dropout if self.training else 0.0
        if self.fused and not need_weights:
            return fused_scaled_dot_product_attention(q, k, v, mask, dropout_p), None
        return scaled_dot_product_attention(q, k, v, mask, dropout_p)

    def forward(self, x_q: Tensor, x_kv: Optional[Tensor], mask: Optional[Tensor] = None, *,
                need_weights: bool = False, cache: Optional[KVCache] = None,
                kv_from_cache: bool = False,
                rotary: Optional[Callable[[Tensor, int], Tensor]] = None):
        """x_q: (B, T, C) queries; x_kv: (B, S, C) keys/values (x_q itself for self-attention).

        mask: bool broadcastable to (B, T, S), True = may attend (a key padding mask is
          mask[:, None, :]).
        cache: self-attention decoding (kv_from_cache=False): the new positions' keys/values are
          appended to `cache` and the queries attend to everything cached. Cross-attention
          (kv_from_cache=True): keys and values are read from `cache` (made once by `kv_cache`) and
          x_kv is ignored (pass None).
        rotary: RoPE, a callable (x (B, H, L, D), first position) -> x rotated; applied to queries
          and keys of self-attention only.
        Returns y (B, T, C), or (y, weights (B, H, T, S)) when need_weights.
        """
        if x_q.size(-1) != self.d_model:
            raise ValueError(f"x_q has width {x_q.size(-1)}, expected d_model = {self.d_model}")
        if kv_from_cache:                               # cross-attention, k and v read from `cache`
            q, k, v = self._cached_cross_attention_qkv(x_q, cache)
        elif x_kv is x_q:                               # self-attention
            q, k, v = self._self_attention_qkv(x_q, cache, rotary)
        else:                                           # cross-attention, k and v from x_kv
            q, k, v = self._cross_attention_qkv(x_q, x_kv, cache, rotary)
        out, weights = self._attend(q, k, v, mask, need_weights)       # (B, H, T, D), weights
        y = self.out_proj(self._merge_heads(out))                       # (B, T, C)
        return (y, weights) if need_weights else y
