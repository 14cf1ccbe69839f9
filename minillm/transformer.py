"""The transformer's configuration and its two stacks: encoder blocks and decoder blocks
(Vaswani et al. 2017).

    EncoderBlock: x + self-attn(norm(x)), then x + FFN(norm(x))    (pre-norm, Xiong et al. 2020)
    DecoderBlock: x + causal self-attn(norm(x)), x + cross-attn(norm(x), enc_out), x + FFN(norm(x))
    Encoder / Decoder: N blocks, then a final norm.

minillm.model puts them together with the embeddings and the output head (Seq2Seq). Departures from
the paper: pre-norm instead of post-norm; GELU (or SwiGLU) instead of ReLU; optional RMSNorm, RoPE,
DropPath and LayerScale. Masks follow minillm.attention: bool, True = may attend / real token.

Shape symbols: B batch, S source length, T target length, C model width, H heads, D head width,
V vocabulary.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Optional

import torch
import torch.nn as nn

from minillm.attention import KVCache, MultiHeadAttention
from minillm.layers import DropPath, LayerScale, RotaryEmbedding, make_ffn, make_norm

Tensor = torch.Tensor


# --------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------
# Named sets of ModelConfig defaults (train.py --config); overrides go on top in ModelConfig.preset.
MODEL_PRESETS = {
    # ≈ 9.4M parameters with V = 8000: trains on 2 CPU cores in minutes.
    # dropout 0.05: 0.1 learned less per step on the law data (bench/README.md); long runs may
    # want 0.1.
    "small": dict(vocab_size=8000, d_model=256, n_heads=4, n_encoder_layers=4, n_decoder_layers=4,
                  d_ff=1024, dropout=0.05),
    # ≈ 105M parameters with V = 8000 (BART-base widths, Lewis et al. 2020): for a GPU.
    "base": dict(vocab_size=8000, d_model=768, n_heads=12, n_encoder_layers=6, n_decoder_layers=6,
                 d_ff=3072),
}


@dataclass
class ModelConfig:
    """Every size of the model. `dataclasses.asdict(cfg)` round-trips through `ModelConfig(**d)`,
    which is how checkpoints store it. The defaults are the `small` preset's sizes; MODEL_PRESETS
    sets the rest."""

    vocab_size: int = 8000          # V, tokens, special ones included; 8000 fits a few MB of
                                    # Turkish text
    d_model: int = 256              # C, the residual stream width
    n_heads: int = 4                # H; head width D = C / H = 64, the usual head size
    n_encoder_layers: int = 4       # encoder blocks
    n_decoder_layers: int = 4       # decoder blocks
    d_ff: int = 1024                # feed-forward width, 4·C as in Vaswani et al. 2017 (SwiGLU
                                    # uses 2/3 of it)
    ffn: str = "gelu"               # "gelu" | "swiglu" (Shazeer 2020), same parameter count
    norm: str = "layernorm"         # "layernorm" | "rmsnorm"
    pos: str = "sinusoidal"         # "sinusoidal" (added to embeddings) | "rope" (rotates q, k in
                                    # self-attention)
    dropout: float = 0.1            # probability, on embeddings and on each residual branch's
                                    # output (Vaswani §5.4)
    attention_dropout: float = 0.0  # probability, on attention weights; 0 keeps the fused kernels
                                    # fastest
    ffn_dropout: float = 0.0        # probability, on the FFN's hidden units; 0 as in Vaswani §5.4
                                    # (0.1 learned slower)
    drop_path: float = 0.0          # stochastic-depth rate of the DEEPEST block; shallower ones
                                    # scale linearly
    layer_scale: float = 0.0        # initial LayerScale γ (e.g. 1e-4); 0 disables LayerScale
    max_len: int = 512              # positions, the longest source or target sequence the tables
                                    # cover
    max_src_len: int | None = None  # source tokens (with <eos>) the model was trained on;
                                    # questions are cut there
    pad_id: int = 0                 # token id of padding; masks are derived from it
    bos_id: int = 1                 # token id that starts every decoder input
    eos_id: int = 2                 # token id that ends every answer
    tie_embeddings: bool = True     # output head = input embedding matrix (Press & Wolf 2017);
                                    # saves V·C params
    bias: bool = True               # biases in the linear layers (as in Vaswani et al.)
    norm_eps: float = 1e-5          # added to the variance inside the norms, as
                                    # torch.nn.LayerNorm's default
    init_std: float = 0.02          # std of the embedding at init (GPT-2, BART): initial logit
                                    # spread init_std·√C
    fused: bool = True              # fused PyTorch kernels for attention and norms; False =
                                    # hand-written path
    copy: bool = False              # pointer-generator head (minillm.copying): copy source
                                    # tokens; for retrieval

    def __post_init__(self):
        for name in ("vocab_size", "d_model", "n_heads", "n_encoder_layers", "n_decoder_layers",
                     "d_ff", "max_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"ModelConfig.{name} must be a positive int, got {value!r}")
        if self.d_model % self.n_heads != 0:
            raise ValueError(f"ModelConfig.d_model ({self.d_model}) must be divisible by n_heads "
                             f"({self.n_heads})")
        choices = {"ffn": ("gelu", "swiglu"), "norm": ("layernorm", "rmsnorm"),
                   "pos": ("sinusoidal", "rope")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"ModelConfig.{name} must be one of {allowed}, "
                                 f"got {getattr(self, name)!r}")
        if self.pos == "sinusoidal" and self.d_model % 2:
            raise ValueError(f"sinusoidal positions need an even d_model, got {self.d_model}")
        if self.pos == "rope" and (self.d_model // self.n_heads) % 2:
            raise ValueError(f"RoPE needs an even head width, got {self.d_model // self.n_heads}")
        for name in ("dropout", "attention_dropout", "ffn_dropout", "drop_path"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f"ModelConfig.{name} must be a probability in [0, 1), "
                                 f"got {value!r}")
        for name in ("pad_id", "bos_id", "eos_id"):
            value = getattr(self, name)
            if not 0 <= value < self.vocab_size:
                raise ValueError(f"ModelConfig.{name} = {value} is outside the vocabulary "
                                 f"[0, {self.vocab_size})")
        if self.max_src_len is not None and not 2 <= self.max_src_len <= self.max_len:
            raise ValueError(f"ModelConfig.max_src_len must be in [2, max_len = {self.max_len}], "
                             f"got {self.max_src_len!r}")
        if len({self.pad_id, self.bos_id, self.eos_id}) != 3:
            raise ValueError("ModelConfig.pad_id, bos_id and eos_id must be three different ids")
        if self.layer_scale < 0 or self.norm_eps <= 0 or self.init_std <= 0:
            raise ValueError("ModelConfig.layer_scale must be >= 0, norm_eps and init_std > 0")

    @classmethod
    def preset(cls, name: str, **overrides) -> "ModelConfig":
        """A named set of defaults, then `overrides` on top (e.g. vocab_size=tok.vocab_size)."""
        if name not in MODEL_PRESETS:
            raise ValueError(f"unknown model preset {name!r}; "
                             f"expected one of {sorted(MODEL_PRESETS)}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown ModelConfig field(s) {unknown}; "
                             f"known fields: {sorted(known)}")
        return cls(**{**MODEL_PRESETS[name], **overrides})


# --------------------------------------------------------------------------------------------------
# Blocks
# --------------------------------------------------------------------------------------------------
def _norm(cfg: ModelConfig) -> nn.Module:
    """The norm the config asks for (LayerNorm or RMSNorm, fused or hand-written), in one place."""
    return make_norm(cfg.norm, cfg.d_model, cfg.norm_eps, cfg.fused)


def _attention(cfg: ModelConfig) -> MultiHeadAttention:
    """One attention sublayer as the config sizes it; self- and cross-attention are alike."""
    return MultiHeadAttention(cfg.d_model, cfg.n_heads, cfg.attention_dropout, cfg.bias, cfg.fused)


def _residual_scale(cfg: ModelConfig) -> nn.Module:
    """LayerScale on a residual branch when the config asks for it, else nothing."""
    return LayerScale(cfg.d_model, cfg.layer_scale) if cfg.layer_scale > 0 else nn.Identity()


class EncoderBlock(nn.Module):
    """x + SelfAttn(Norm(x)), then x + FFN(Norm(x)).

    Departure from Vaswani et al. 2017: pre-norm (normalise the branch input, keep the residual
    stream untouched), which trains stably without warm-up tricks (Xiong et al. 2020). Each branch
    output passes dropout, LayerScale and DropPath before it is added.
    """

    def __init__(self, cfg: ModelConfig, drop_path: float):
        super().__init__()
        self.norm1, self.self_attn = _norm(cfg), _attention(cfg)
        self.norm2 = _norm(cfg)
        self.ffn = make_ffn(cfg.ffn, cfg.d_model, cfg.d_ff, cfg.ffn_dropout, cfg.bias)
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
    """x + CausalSelfAttn(Norm(x)), then x + CrossAttn(Norm(x), enc_out), then x + FFN(Norm(x));
    pre-norm."""

    def __init__(self, cfg: ModelConfig, drop_path: float):
        super().__init__()
        self.norm1, self.self_attn = _norm(cfg), _attention(cfg)
        self.norm2, self.cross_attn = _norm(cfg), _attention(cfg)
        self.norm3 = _norm(cfg)
        self.ffn = make_ffn(cfg.ffn, cfg.d_model, cfg.d_ff, cfg.ffn_dropout, cfg.bias)
        self.dropout = nn.Dropout(cfg.dropout)
        self.scale1 = _residual_scale(cfg)
        self.scale2 = _residual_scale(cfg)
        self.scale3 = _residual_scale(cfg)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor, enc_out: Optional[Tensor], self_mask: Tensor, cross_mask: Tensor,
                *, self_cache: Optional[KVCache] = None, cross_cache: Optional[KVCache] = None,
                rotary: Optional[RotaryEmbedding] = None, need_weights: bool = False):
        # x: (B, T, C); enc_out: (B, S, C) or None when cross_cache holds its keys/values;
        # self_mask: (B, T, T_all) causal & key padding; cross_mask: (B, 1, S) source padding.
        h = self.norm1(x)
        a = self.self_attn(h, h, self_mask, cache=self_cache, rotary=rotary,
                           need_weights=need_weights)
        self_weights = None
        if need_weights:
            a, self_weights = a                                         # (B, H, T, T_all), causal
        x = x + self.drop_path(self.scale1(self.dropout(a)))
        # subtle: cross-attention normalises the DECODER stream only. enc_out has already been
        # through the encoder's final norm; normalising it again here with the decoder's norm would
        # apply a second, decoder-owned scale to every key and value.
        h = self.norm2(x)
        cross_weights = None
        if cross_cache is not None:
            c = self.cross_attn(h, None, cross_mask, cache=cross_cache, kv_from_cache=True,
                                need_weights=need_weights)
        else:
            c = self.cross_attn(h, enc_out, cross_mask, need_weights=need_weights)
        if need_weights:
            c, cross_weights = c                                        # (B, H, T, S)
        x = x + self.drop_path(self.scale2(self.dropout(c)))
        x = x + self.drop_path(self.scale3(self.dropout(self.ffn(self.norm3(x)))))
        return x, cross_weights, self_weights                           # (B, T, C), weights or None


def depth_rates(rate: float, n_layers: int) -> list[float]:
    """Stochastic-depth rate per block, growing linearly to `rate` at the deepest
    (Huang et al. 2016, §3)."""
    return [rate * (i + 1) / n_layers for i in range(n_layers)]


class Encoder(nn.Module):
    """N encoder blocks and a final norm (needed with pre-norm: the residual stream is never
    normalised inside the blocks)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        rates = depth_rates(cfg.drop_path, cfg.n_encoder_layers)
        self.blocks = nn.ModuleList(EncoderBlock(cfg, p) for p in rates)
        self.norm = _norm(cfg)

    def forward(self, x: Tensor, mask: Tensor, rotary: Optional[RotaryEmbedding] = None) -> Tensor:
        for block in self.blocks:
            x = block(x, mask, rotary)                                  # (B, S, C)
        return self.norm(x)                                             # (B, S, C)


class Decoder(nn.Module):
    """N decoder blocks and a final norm."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        rates = depth_rates(cfg.drop_path, cfg.n_decoder_layers)
        self.blocks = nn.ModuleList(DecoderBlock(cfg, p) for p in rates)
        self.norm = _norm(cfg)

    def forward(self, x: Tensor, enc_out: Optional[Tensor], self_mask: Tensor, cross_mask: Tensor,
                *, self_kv: Optional[list[KVCache]] = None,
                cross_kv: Optional[list[KVCache]] = None,
                rotary: Optional[RotaryEmbedding] = None,
                need_weights: bool = False) -> tuple[Tensor, list, list]:
        """self_kv / cross_kv: one KVCache per block when decoding incrementally
        (model.DecoderCache). Returns (h, cross_weights, self_weights): the lists hold each block's
        attention weights, or None unless need_weights."""
        cross_weights, self_weights = [], []
        for i, block in enumerate(self.blocks):
            x, w, w_self = block(x, enc_out, self_mask, cross_mask,
                                 self_cache=self_kv[i] if self_kv is not None else None,
                                 cross_cache=cross_kv[i] if cross_kv is not None else None,
                                 rotary=rotary, need_weights=need_weights)
            cross_weights.append(w)
            self_weights.append(w_self)
        # (B, T, C), and the H-head weights of each layer
        return self.norm(x), cross_weights, self_weights
