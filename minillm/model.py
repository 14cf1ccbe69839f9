"""The encoder–decoder transformer (Vaswani et al. 2017), pre-norm, with a cache for incremental decoding.

    src_ids (B, S) ──embed·√C + pos──► Encoder: N × [self-attn, FFN] ──final norm──► enc_out (B, S, C)
    tgt_in_ids (B, T) ──embed·√C + pos──► Decoder: N × [causal self-attn, cross-attn(enc_out), FFN]
                                          ──final norm──► · Eᵀ (tied head) ──► logits (B, T, V)

Departures from the paper, each said where it happens: pre-norm residual blocks (Xiong et al. 2020) instead
of post-norm; GELU (or SwiGLU) instead of ReLU; optional RMSNorm, RoPE, DropPath and LayerScale; one
embedding matrix shared by source, target and output head (the paper shares them too, §3.4, because source
and target use one BPE vocabulary). Masks follow minillm.attention: bool, True = may attend / real token.

Shape symbols: B batch, S source length, T target length, C model width, H heads, D head width, V vocabulary.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from minillm.attention import KVCache, MultiHeadAttention, causal_padding_mask, padding_mask
from minillm.layers import (DropPath, LayerScale, RotaryEmbedding, SinusoidalPositionalEncoding, make_ffn,
                            make_norm, swiglu_hidden)

Tensor = torch.Tensor


# ----------------------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------------------
@dataclass
class ModelConfig:
    """Every size of the model. `dataclasses.asdict(cfg)` round-trips through `ModelConfig(**d)`, which is
    how checkpoints store it. Defaults are the `small` preset."""

    vocab_size: int = 8000          # V, tokens, special ones included; 8000 fits a few MB of Turkish text
    d_model: int = 256              # C, the residual stream width
    n_heads: int = 4                # H; head width D = C / H = 64, the usual head size
    n_encoder_layers: int = 4       # encoder blocks
    n_decoder_layers: int = 4       # decoder blocks
    d_ff: int = 1024                # feed-forward width, 4·C as in Vaswani et al. 2017 (SwiGLU uses 2/3 of it)
    ffn: str = "gelu"               # "gelu" | "swiglu" (Shazeer 2020), same parameter count
    norm: str = "layernorm"         # "layernorm" | "rmsnorm"
    pos: str = "sinusoidal"         # "sinusoidal" (added to embeddings) | "rope" (rotates q, k in self-attention)
    dropout: float = 0.1            # probability, on embeddings and on each residual branch's output (Vaswani §5.4)
    attention_dropout: float = 0.0  # probability, on attention weights; 0 keeps the fused kernels fastest
    ffn_dropout: float = 0.0        # probability, on the FFN's hidden units; 0 as in Vaswani §5.4 (0.1 learned slower)
    drop_path: float = 0.0          # stochastic-depth rate of the DEEPEST block; shallower ones scale linearly
    layer_scale: float = 0.0        # initial LayerScale γ (e.g. 1e-4); 0 disables LayerScale
    max_len: int = 512              # positions, the longest source or target sequence the tables cover
    pad_id: int = 0                 # token id of padding; masks are derived from it
    bos_id: int = 1                 # token id that starts every decoder input
    eos_id: int = 2                 # token id that ends every answer
    tie_embeddings: bool = True     # output head = input embedding matrix (Press & Wolf 2017); saves V·C params
    bias: bool = True               # biases in the linear layers (as in Vaswani et al.)
    norm_eps: float = 1e-5          # added to the variance inside the norms, as torch.nn.LayerNorm's default
    init_std: float = 0.02          # std of the embedding at init (GPT-2, BART): initial logit spread init_std·√C
    fused: bool = True              # fused PyTorch kernels for attention and norms; False = hand-written path

    def __post_init__(self):
        for name in ("vocab_size", "d_model", "n_heads", "n_encoder_layers", "n_decoder_layers", "d_ff", "max_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ModelConfig.{name} must be a positive int, got {value!r}")
        if self.d_model % self.n_heads != 0:
            raise ValueError(f"ModelConfig.d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")
        choices = {"ffn": ("gelu", "swiglu"), "norm": ("layernorm", "rmsnorm"), "pos": ("sinusoidal", "rope")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"ModelConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.pos == "sinusoidal" and self.d_model % 2:
            raise ValueError(f"sinusoidal positions need an even d_model, got {self.d_model}")
        if self.pos == "rope" and (self.d_model // self.n_heads) % 2:
            raise ValueError(f"RoPE needs an even head width, got {self.d_model // self.n_heads}")
        for name in ("dropout", "attention_dropout", "ffn_dropout", "drop_path"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"ModelConfig.{name} must be a probability in [0, 1), got {value!r}")
        for name in ("pad_id", "bos_id", "eos_id"):
            value = getattr(self, name)
            if not 0 <= value < self.vocab_size:
                raise ValueError(f"ModelConfig.{name} = {value} is outside the vocabulary [0, {self.vocab_size})")
        if len({self.pad_id, self.bos_id, self.eos_id}) != 3:
            raise ValueError("ModelConfig.pad_id, bos_id and eos_id must be three different ids")
        if self.layer_scale < 0 or self.norm_eps <= 0 or self.init_std <= 0:
            raise ValueError("ModelConfig.layer_scale must be >= 0, norm_eps and init_std > 0")

    @classmethod
    def preset(cls, name: str, **overrides) -> "ModelConfig":
        """A named set of defaults, then `overrides` on top (e.g. vocab_size=tok.vocab_size)."""
        presets = {
            # ≈ 9.4M parameters with V = 8000: trains on 2 CPU cores in minutes.
            # dropout 0.05: on the law data's 1,353 pairs, 0.1 learned less per step (perplexity 116 against
            # 109 at step 600, bench/learning.py); longer runs on small data may want 0.1 back (--dropout 0.1).
            "small": dict(vocab_size=8000, d_model=256, n_heads=4, n_encoder_layers=4, n_decoder_layers=4,
                          d_ff=1024, dropout=0.05),
            # ≈ 105M parameters with V = 8000 (BART-base widths, Lewis et al. 2020): for a GPU.
            "base": dict(vocab_size=8000, d_model=768, n_heads=12, n_encoder_layers=6, n_decoder_layers=6,
                         d_ff=3072),
        }
        if name not in presets:
            raise ValueError(f"unknown model preset {name!r}; expected one of {sorted(presets)}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown ModelConfig field(s) {unknown}; known fields: {sorted(known)}")
        return cls(**{**presets[name], **overrides})


# ----------------------------------------------------------------------------------------------------------
# Blocks
# ----------------------------------------------------------------------------------------------------------
def _residual_scale(cfg: ModelConfig) -> nn.Module:
    return LayerScale(cfg.d_model, cfg.layer_scale) if cfg.layer_scale > 0 else nn.Identity()


class EncoderBlock(nn.Module):
    """x + SelfAttn(Norm(x)), then x + FFN(Norm(x)).

    Departure from Vaswani et al. 2017: pre-norm (normalise the branch input, keep the residual stream
    untouched), which trains stably without warm-up tricks (Xiong et al. 2020). Each branch output passes
    dropout, LayerScale and DropPath before it is added.
    """

    def __init__(self, cfg: ModelConfig, drop_path: float):
        super().__init__()
        C = cfg.d_model
        self.norm1 = make_norm(cfg.norm, C, cfg.norm_eps, cfg.fused)
        self.self_attn = MultiHeadAttention(C, cfg.n_heads, cfg.attention_dropout, cfg.bias, cfg.fused)
        self.norm2 = make_norm(cfg.norm, C, cfg.norm_eps, cfg.fused)
        self.ffn = make_ffn(cfg.ffn, C, cfg.d_ff, cfg.ffn_dropout, cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)
        self.scale1, self.scale2 = _residual_scale(cfg), _residual_scale(cfg)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor, mask: Tensor, rotary: Optional[RotaryEmbedding] = None) -> Tensor:
        # x: (B, S, C); mask: (B, 1, S) key padding, True = real token
        h = self.norm1(x)
        x = x + self.drop_path(self.scale1(self.dropout(self.self_attn(h, h, mask, rotary=rotary))))
        x = x + self.drop_path(self.scale2(self.dropout(self.ffn(self.norm2(x)))))
        return x                                                        # (B, S, C)


class DecoderBlock(nn.Module):
    """x + CausalSelfAttn(Norm(x)), then x + CrossAttn(Norm(x), enc_out), then x + FFN(Norm(x)); pre-norm."""

    def __init__(self, cfg: ModelConfig, drop_path: float):
        super().__init__()
        C = cfg.d_model
        self.norm1 = make_norm(cfg.norm, C, cfg.norm_eps, cfg.fused)
        self.self_attn = MultiHeadAttention(C, cfg.n_heads, cfg.attention_dropout, cfg.bias, cfg.fused)
        self.norm2 = make_norm(cfg.norm, C, cfg.norm_eps, cfg.fused)
        self.cross_attn = MultiHeadAttention(C, cfg.n_heads, cfg.attention_dropout, cfg.bias, cfg.fused)
        self.norm3 = make_norm(cfg.norm, C, cfg.norm_eps, cfg.fused)
        self.ffn = make_ffn(cfg.ffn, C, cfg.d_ff, cfg.ffn_dropout, cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)
        self.scale1, self.scale2, self.scale3 = (_residual_scale(cfg) for _ in range(3))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor, enc_out: Optional[Tensor], self_mask: Tensor, cross_mask: Tensor, *,
                self_cache: Optional[KVCache] = None, cross_cache: Optional[KVCache] = None,
                rotary: Optional[RotaryEmbedding] = None, need_weights: bool = False):
        # x: (B, T, C); enc_out: (B, S, C) or None when cross_cache holds its keys/values;
        # self_mask: (B, T, T_total) causal & key padding; cross_mask: (B, 1, S) source padding.
        h = self.norm1(x)
        a = self.self_attn(h, h, self_mask, cache=self_cache, rotary=rotary)
        x = x + self.drop_path(self.scale1(self.dropout(a)))
        # subtle: cross-attention normalises the DECODER stream only. enc_out has already been through the
        # encoder's final norm; normalising it again here with the decoder's norm (the seed's bug) would
        # apply a second, decoder-owned scale to every key and value.
        h = self.norm2(x)
        weights = None
        if cross_cache is not None:
            c = self.cross_attn(h, None, cross_mask, cache=cross_cache, static_kv=True, need_weights=need_weights)
        else:
            c = self.cross_attn(h, enc_out, cross_mask, need_weights=need_weights)
        if need_weights:
            c, weights = c                                              # weights: (B, H, T, S)
        x = x + self.drop_path(self.scale2(self.dropout(c)))
        x = x + self.drop_path(self.scale3(self.dropout(self.ffn(self.norm3(x)))))
        return x, weights                                               # (B, T, C)


def _depth_rates(rate: float, n_layers: int) -> list[float]:
    """Stochastic-depth rate per block, growing linearly to `rate` at the deepest (Huang et al. 2016, §3)."""
    return [rate * (i + 1) / n_layers for i in range(n_layers)]


class Encoder(nn.Module):
    """N encoder blocks and a final norm (needed with pre-norm: the residual stream is never normalised
    inside the blocks)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        rates = _depth_rates(cfg.drop_path, cfg.n_encoder_layers)
        self.blocks = nn.ModuleList(EncoderBlock(cfg, p) for p in rates)
        self.norm = make_norm(cfg.norm, cfg.d_model, cfg.norm_eps, cfg.fused)

    def forward(self, x: Tensor, mask: Tensor, rotary: Optional[RotaryEmbedding] = None) -> Tensor:
        for block in self.blocks:
            x = block(x, mask, rotary)                                  # (B, S, C)
        return self.norm(x)                                             # (B, S, C)


class Decoder(nn.Module):
    """N decoder blocks and a final norm."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        rates = _depth_rates(cfg.drop_path, cfg.n_decoder_layers)
        self.blocks = nn.ModuleList(DecoderBlock(cfg, p) for p in rates)
        self.norm = make_norm(cfg.norm, cfg.d_model, cfg.norm_eps, cfg.fused)

    def forward(self, x: Tensor, enc_out: Optional[Tensor], self_mask: Tensor, cross_mask: Tensor, *,
                cache: Optional["DecoderCache"] = None, rotary: Optional[RotaryEmbedding] = None,
                need_weights: bool = False) -> tuple[Tensor, list]:
        cross_weights = []
        for i, block in enumerate(self.blocks):
            x, w = block(x, enc_out, self_mask, cross_mask,
                         self_cache=cache.self_kv[i] if cache is not None else None,
                         cross_cache=cache.cross_kv[i] if cache is not None else None,
                         rotary=rotary, need_weights=need_weights)
            cross_weights.append(w)
        return self.norm(x), cross_weights                              # (B, T, C), H-head weights per layer


# ----------------------------------------------------------------------------------------------------------
# Decoding cache
# ----------------------------------------------------------------------------------------------------------
class DecoderCache:
    """Everything `Seq2Seq.decode_step` needs between steps, per batch row.

    self_kv:  one growing KVCache per decoder layer (keys/values of every target position so far);
    cross_kv: one KVCache per decoder layer with the source's keys/values, computed ONCE in make_cache;
    src_mask: (B, S) bool, True = real source token;
    tgt_mask: (B, length) bool, True = real (non-pad) target token so far.
    """

    def __init__(self, self_kv: list[KVCache], cross_kv: list[KVCache], src_mask: Tensor, tgt_mask: Tensor):
        self.self_kv, self.cross_kv, self.src_mask, self.tgt_mask = self_kv, cross_kv, src_mask, tgt_mask

    @property
    def length(self) -> int:
        """Number of target positions already cached (the position of the next token fed)."""
        return self.tgt_mask.size(1)

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows `index` (LongTensor (B',)) in that order, in every tensor held: beam search
        expands and reorders hypotheses with it, and generation drops finished rows."""
        for kv in self.self_kv + self.cross_kv:
            kv.reorder(index)
        self.src_mask = self.src_mask.index_select(0, index)            # (B', S)
        self.tgt_mask = self.tgt_mask.index_select(0, index)            # (B', length)


# ----------------------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------------------
class Seq2Seq(nn.Module):
    """Encoder–decoder transformer; `forward(src_ids, tgt_in_ids)` -> logits (B, T, V)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        C = cfg.d_model
        # One embedding for source, target and (tied) output head (Vaswani et al. 2017, §3.4).
        self.embed = nn.Embedding(cfg.vocab_size, C)
        self.embed_scale = math.sqrt(C)                 # Vaswani et al. 2017, §3.4: embeddings × √C
        if cfg.pos == "sinusoidal":
            # Positions on the tokens' footing: the table's coordinates have RMS 1/√2 (sin² and cos² average
            # 1/2), the input tokens' init_std·√C (see _init_weights); scaling the table by init_std·√(2C)
            # gives both the same RMS at init, 0.32 at C = 256. Unscaled, the positions were 2.2x the tokens
            # and the law benchmark's perplexity at step 600 was 159 instead of 144 (bench/learning.py).
            self.pos = SinusoidalPositionalEncoding(C, cfg.max_len, scale=cfg.init_std * math.sqrt(2 * C))
            self.rotary = None
        else:
            self.pos = None
            self.rotary = RotaryEmbedding(C // cfg.n_heads, cfg.max_len)
        self.embed_dropout = nn.Dropout(cfg.dropout)
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.head = None if cfg.tie_embeddings else nn.Linear(C, cfg.vocab_size, bias=False)
        self._init_weights()

    # --- initialisation -----------------------------------------------------------------------------------
    def _init_weights(self) -> None:
        """The initialisation, and why. Each choice was measured on the law data (bench/learning.py, 600 steps,
        the same batches as a same-size BART; the README's training section has the table).

        - Linear weights ~ N(0, 1/fan_in), biases 0 (LeCun et al. 1998): a unit-variance input gives a
          unit-variance output, so every layer starts as strong as the stream it reads. (GPT-2's fixed 0.02
          is 1/√2500: at C = 256 each projection shrank its input to 0.32 of its size; with it, learning
          rates of 1e-3 and 2e-3 learned less per step than 5e-4 (perplexity 182 and 315 against 159 at step
          600), while with 1/fan_in, 1e-3 reaches 116 where 5e-4 reaches 142.)
        - The projections that write into the residual stream (attention out_proj, FFN output) get
          1/√(fan_in · number of residual branches in their stack), so the stream's variance stays O(1)
          however deep the model is (GPT-2 §2.3).
        - The embedding E ~ N(0, init_std²), init_std = 0.02 as in GPT-2 and BART. Both uses depend on it:
          * output: the tied head computes logits = h · Eᵀ, where h leaves the decoder's final norm with unit
            variance per coordinate (|h|² ≈ C). A logit is then a sum of C products of variance init_std²,
            so the initial logits have a spread of init_std·√C = 0.02 · √256 = 0.32 at C = 256 (0.55 at
            C = 768, BART-base's). Small enough that the first loss is close to ln V (a near-uniform start),
            large enough that the first AdamW steps, which move each coordinate of E by about lr, make the
            softmax peaked where the data says.
          * input: E[id]·√C gives token coordinates of spread init_std·√C = 0.32; the sinusoidal table is
            scaled to the same size (see __init__), so where a token is does not drown what it is.
        - subtle: this project's first version drew E ~ N(0, 1/C) and multiplied the head's input by 1/√C
          (as T5 does): the initial logit spread was 1/√C = 0.06, five times below BART's, and the tied
          embedding had to grow ~10x before the softmax could be peaked anywhere. Every test passed; the model
          learned far slower per step than a same-size BART and never read the question.
          tests/test_learning.py now checks the spread and that a tiny model learns a copy task.
        - Norm γ = 1, β = 0; LayerScale γ = cfg.layer_scale (set by the module).
        """
        for module in self.modules():
            if isinstance(module, nn.Linear):
                # LeCun init: N(0, 1/fan_in) keeps a unit-variance input at unit variance through the matmul
                nn.init.normal_(module.weight, mean=0.0, std=module.in_features ** -0.5)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        nn.init.normal_(self.embed.weight, mean=0.0, std=self.cfg.init_std)   # logit spread init_std·√C
        for stack, branches in ((self.encoder, 2), (self.decoder, 3)):
            n_branches = branches * len(stack.blocks)      # residual branches that add into this stack's stream
            for block in stack.blocks:
                outs = [block.self_attn.out_proj, block.ffn.w3 if hasattr(block.ffn, "w3") else block.ffn.w2]
                if hasattr(block, "cross_attn"):
                    outs.append(block.cross_attn.out_proj)
                for linear in outs:
                    nn.init.normal_(linear.weight, mean=0.0, std=(linear.in_features * n_branches) ** -0.5)
        if self.head is not None:                          # an untied head starts like the tied one
            nn.init.normal_(self.head.weight, mean=0.0, std=self.cfg.init_std)

    # --- pieces -------------------------------------------------------------------------------------------
    def _check_ids(self, ids: Tensor, name: str) -> None:
        if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.dtype != torch.long:
            got = f"{ids.dtype} tensor of shape {tuple(ids.shape)}" if isinstance(ids, torch.Tensor) else type(ids)
            raise ValueError(f"{name} must be an int64 tensor of shape (B, length), got {got}")

    def _embed(self, ids: Tensor, start: int) -> Tensor:
        x = self.embed(ids) * self.embed_scale                          # (B, L, C)
        if self.pos is not None:
            x = self.pos(x, start)                                      # + PE[start : start + L]
        elif start + ids.size(1) > self.cfg.max_len:
            raise ValueError(f"sequence reaches position {start + ids.size(1)}, beyond max_len = {self.cfg.max_len}")
        return self.embed_dropout(x)

    def _logits(self, h: Tensor) -> Tensor:
        # Tied head (Press & Wolf 2017): reuse E as the output projection, (B, T, C) @ (C, V) -> (B, T, V).
        return F.linear(h, self.embed.weight) if self.head is None else self.head(h)

    # --- public API ---------------------------------------------------------------------------------------
    def encode(self, src_ids: Tensor) -> tuple[Tensor, Tensor]:
        """src_ids (B, S) -> enc_out (B, S, C), src_mask (B, S) bool, True = real token."""
        self._check_ids(src_ids, "src_ids")
        src_mask = padding_mask(src_ids, self.cfg.pad_id)               # (B, S)
        x = self._embed(src_ids, 0)                                     # (B, S, C)
        enc_out = self.encoder(x, src_mask[:, None, :], self.rotary)   # keys masked: (B, 1, S)
        return enc_out, src_mask

    def forward(self, src_ids: Tensor, tgt_in_ids: Tensor) -> Tensor:
        """src_ids (B, S), tgt_in_ids (B, T) int64 -> logits (B, T, V). Teacher forcing: position t sees
        tgt_in_ids[:, :t+1] and the whole source."""
        enc_out, src_mask = self.encode(src_ids)
        self._check_ids(tgt_in_ids, "tgt_in_ids")
        T = tgt_in_ids.size(1)
        tgt_mask = padding_mask(tgt_in_ids, self.cfg.pad_id)            # (B, T)
        # Causal AND key padding: query t sees real target tokens at positions <= t.
        self_mask = causal_padding_mask(tgt_mask, T)                    # (B, T, T)
        x = self._embed(tgt_in_ids, 0)                                  # (B, T, C)
        h, _ = self.decoder(x, enc_out, self_mask, src_mask[:, None, :], rotary=self.rotary)
        return self._logits(h)                                          # (B, T, V)

    def make_cache(self, enc_out: Tensor, src_mask: Tensor) -> DecoderCache:
        """Start decoding one batch of sources: each decoder layer's cross-attention keys/values are
        computed here, once, and reused by every decode_step."""
        if enc_out.dim() != 3 or src_mask.shape != enc_out.shape[:2] or src_mask.dtype != torch.bool:
            raise ValueError(f"make_cache expects enc_out (B, S, C) and a bool src_mask (B, S); got "
                             f"{tuple(enc_out.shape)} and {src_mask.dtype} {tuple(src_mask.shape)}")
        cross = [block.cross_attn.kv_cache(enc_out) for block in self.decoder.blocks]   # (B, H, S, D) each
        empty = torch.zeros(enc_out.size(0), 0, dtype=torch.bool, device=enc_out.device)  # (B, 0)
        return DecoderCache([KVCache() for _ in self.decoder.blocks], cross, src_mask, empty)

    def decode_step(self, tgt_ids: Tensor, cache: DecoderCache, need_weights: bool = False):
        """Feed only the NEW target tokens tgt_ids (B, T_new), at positions cache.length, cache.length + 1, …

        Appends their self-attention keys/values to the cache and returns logits (B, T_new, V), or
        (logits, cross) with cross a list over decoder layers of (B, H, T_new, S) attention weights.
        Equal to the matching rows of forward() (tests/test_model.py checks it at every step).
        """
        self._check_ids(tgt_ids, "tgt_ids")
        if tgt_ids.size(0) != cache.src_mask.size(0):
            raise ValueError(f"tgt_ids has batch {tgt_ids.size(0)} but the cache holds {cache.src_mask.size(0)} rows")
        start, T_new = cache.length, tgt_ids.size(1)
        x = self._embed(tgt_ids, start)                                 # (B, T_new, C) at positions start…
        cache.tgt_mask = torch.cat([cache.tgt_mask, padding_mask(tgt_ids, self.cfg.pad_id)], dim=1)  # (B, S_t)
        # subtle: bottom-right-aligned causal mask: the T_new queries are the last T_new of S_t keys.
        self_mask = causal_padding_mask(cache.tgt_mask, T_new)          # (B, T_new, S_t)
        h, cross = self.decoder(x, None, self_mask, cache.src_mask[:, None, :], cache=cache,
                                rotary=self.rotary, need_weights=need_weights)
        logits = self._logits(h)                                        # (B, T_new, V)
        return (logits, cross) if need_weights else logits

    def num_params(self, non_embedding: bool = False) -> int:
        """Number of parameters (the tied matrix counted once); non_embedding leaves out E."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.embed.weight.numel() if non_embedding else n

    def flops_per_token(self, src_len: int, tgt_len: int, training: bool = True) -> float:
        """Matmul FLOPs per token (source and target tokens both counted) for one pair of lengths.

        A matmul (m × k) @ (k × n) costs 2·m·k·n FLOPs. Forward: 2 FLOPs per weight per token through
        each linear layer, plus QKᵀ and weights·V (2·2·L_q·L_k·C per layer), plus the head; backward costs
        twice the forward (Kaplan et al. 2020, §2.1), so training is 3×. Norms, softmax and elementwise work
        are left out (they are a few % here). The full T×T score matrix is counted, as it is computed.
        """
        cfg, C, S, T = self.cfg, self.cfg.d_model, src_len, tgt_len
        ffn_weights = 3 * C * swiglu_hidden(cfg.d_ff) if cfg.ffn == "swiglu" else 2 * C * cfg.d_ff
        enc_layer = 2 * S * (4 * C * C + ffn_weights) + 4 * S * S * C          # q,k,v,o + FFN; QKᵀ and ·V
        dec_layer = (2 * T * (4 * C * C + 2 * C * C + ffn_weights)            # self q,k,v,o; cross q,o; FFN
                     + 2 * S * 2 * C * C                                       # cross k,v over the source
                     + 4 * T * T * C + 4 * T * S * C)                          # self and cross attention
        head = 2 * T * C * cfg.vocab_size
        forward = cfg.n_encoder_layers * enc_layer + cfg.n_decoder_layers * dec_layer + head
        return (3 if training else 1) * forward / (S + T)
