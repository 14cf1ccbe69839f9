"""The encoder–decoder transformer (Vaswani et al. 2017): embeddings, the two stacks of
minillm.transformer, the tied output head, the initialisation, and a cache for incremental
decoding.

    src_ids (B, S)    ──embed·√C + pos──► Encoder: N × [self-attn, FFN]
                      ──final norm──► enc_out (B, S, C)
    tgt_in_ids (B, T) ──embed·√C + pos──► Decoder: N × [causal self-attn,
                                                        cross-attn(enc_out), FFN]
                      ──final norm──► · Eᵀ (tied head) ──► logits (B, T, V)

Departures from the paper, each said where it happens: pre-norm residual blocks (Xiong et al.
2020) instead of post-norm; GELU (or SwiGLU) instead of ReLU; optional RMSNorm, RoPE, DropPath and
LayerScale; one embedding matrix shared by source, target and output head (the paper shares them
too, §3.4, because source and target use one BPE vocabulary). Masks follow minillm.attention:
bool, True = may attend / real token.

Shape symbols: B batch, S source length, T target length, C model width, H heads, D head width,
V vocabulary.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from minillm.attention import KVCache, causal_padding_mask, padding_mask
from minillm.copying import CopyHead
from minillm.layers import RotaryEmbedding, SinusoidalPositionalEncoding, swiglu_hidden
from minillm.transformer import Decoder, Encoder, ModelConfig

Tensor = torch.Tensor
__all__ = ["ModelConfig", "DecoderCache", "Seq2Seq"]   # ModelConfig lives in minillm.transformer


# --------------------------------------------------------------------------------------------------
# Decoding cache
# --------------------------------------------------------------------------------------------------
class DecoderCache:
    """Everything `Seq2Seq.decode_step` needs between steps, per batch row.

    self_kv:  one growing KVCache per decoder layer (keys/values of every target position so far);
    cross_kv: one KVCache per decoder layer with the source's keys/values, computed ONCE in
              make_cache;
    src_mask: (B, S) bool, True = real source token;
    tgt_mask: (B, length) bool, True = real (non-pad) target token so far;
    src_ids, copy_keys: (B, S) and (B, S, C), what the copy head (minillm.copying) reads; None
              without one.
    src_all_real, tgt_all_real: no padding at all, so decode_step can skip building and applying
    that mask (the fused attention kernel is fastest without one; a step at batch 1 is mostly such
    overheads).
    """

    def __init__(self, self_kv: list[KVCache], cross_kv: list[KVCache], src_mask: Tensor,
                 tgt_mask: Tensor, src_ids: Tensor | None = None,
                 copy_keys: Tensor | None = None):
        self.self_kv = self_kv
        self.cross_kv = cross_kv
        self.src_mask = src_mask
        self.tgt_mask = tgt_mask
        self.src_ids, self.copy_keys = src_ids, copy_keys
        self.covered = None       # (B, S): how much the copy head pointed at each position so far
        self.src_all_real, self.tgt_all_real = bool(src_mask.all()), bool(tgt_mask.all())

    @property
    def length(self) -> int:
        """Number of target positions already cached (the position of the next token fed)."""
        return self.tgt_mask.size(1)

    def reorder(self, index: Tensor) -> None:
        """Keep batch rows `index` (LongTensor (B',)) in that order, in every tensor held: beam
        search expands and reorders hypotheses with it, and generation drops finished rows."""
        for kv in self.self_kv + self.cross_kv:
            kv.reorder(index)
        self.src_mask = self.src_mask.index_select(0, index)            # (B', S)
        self.tgt_mask = self.tgt_mask.index_select(0, index)            # (B', length)
        if self.copy_keys is not None:
            self.src_ids = self.src_ids.index_select(0, index)          # (B', S)
            self.copy_keys = self.copy_keys.index_select(0, index)      # (B', S, C)
            if self.covered is not None:
                self.covered = self.covered.index_select(0, index)      # (B', S)


# --------------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------------
class Seq2Seq(nn.Module):
    """Encoder–decoder transformer; `forward(src_ids, tgt_in_ids)` -> logits (B, T, V)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        C = cfg.d_model
        # One embedding for source, target and (tied) output head (Vaswani et al. 2017, §3.4).
        self.embed = nn.Embedding(cfg.vocab_size, C)
        self.embed_scale = math.sqrt(C)             # Vaswani et al. 2017, §3.4: embeddings × √C
        if cfg.pos == "sinusoidal":
            # Positions on the tokens' footing: the table's coordinates have RMS 1/√2 (sin² and
            # cos² average 1/2), the input tokens' init_std·√C (see _init_weights); scaling the
            # table by init_std·√(2C) gives both the same RMS at init, 0.32 at C = 256 (unscaled,
            # the positions were 2.2x the tokens and learned less per step: bench/README.md, "How
            # the recipe got there").
            pos_scale = cfg.init_std * math.sqrt(2 * C)
            self.pos = SinusoidalPositionalEncoding(C, cfg.max_len, scale=pos_scale)
            self.rotary = None
        else:
            self.pos = None
            self.rotary = RotaryEmbedding(C // cfg.n_heads, cfg.max_len)
        self.embed_dropout = nn.Dropout(cfg.dropout)
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.head = None if cfg.tie_embeddings else nn.Linear(C, cfg.vocab_size, bias=False)
        # Pointer-generator (See et al. 2017): copy source tokens as well as write from the
        # vocabulary.
        self.copy = CopyHead(C) if cfg.copy else None
        # What the model reads besides the question (a minillm.retrieval.Retriever), or None. Not a
        # weight: minillm.checkpoint.load sets it from the corpus a checkpoint records, and
        # generate() consults it.
        self.retriever = None
        self._init_weights()

    # --- initialisation -------------------------------------------------------------------------
    def _scale_residual_outputs(self) -> None:
        """GPT-2 §2.3: the projections that write into the residual stream get
        1/√(fan_in · number of residual branches in their stack), so the stream's variance stays
        O(1) at any depth."""
        for stack, branches in ((self.encoder, 2), (self.decoder, 3)):
            # residual branches that add into this stack's stream
            n_branches = branches * len(stack.blocks)
            for block in stack.blocks:
                ffn_out = block.ffn.w3 if hasattr(block.ffn, "w3") else block.ffn.w2
                outs = [block.self_attn.out_proj, ffn_out]
                if hasattr(block, "cross_attn"):
                    outs.append(block.cross_attn.out_proj)
                for linear in outs:
                    std = (linear.in_features * n_branches) ** -0.5
                    nn.init.normal_(linear.weight, mean=0.0, std=std)

    def _init_weights(self) -> None:
        """The initialisation, and why (each choice measured on the law data against a same-size
        BART; the figures and the choices that lost are in bench/README.md, "How the recipe got
        there").

        - Linear weights ~ N(0, 1/fan_in), biases 0 (LeCun et al. 1998): a unit-variance input
          gives a unit-variance output, so every layer starts as strong as the stream it reads.
        - The projections that write into the residual stream (attention out_proj, FFN output) get
          1/√(fan_in · number of residual branches in their stack), so the stream's variance
          stays O(1) however deep the model is (GPT-2 §2.3).
        - The embedding E ~ N(0, init_std²), init_std = 0.02 as in GPT-2 and BART. Both uses
          depend on it:
          * output: the tied head computes logits = h · Eᵀ, where h leaves the decoder's final
            norm with unit variance per coordinate (|h|² ≈ C), so the initial logits have a
            spread of init_std·√C (0.32 at C = 256): small enough for a near-uniform start
            (loss ≈ ln V), large enough that the first AdamW steps can make the softmax peaked
            where the data says.
          * input: E[id]·√C gives token coordinates of spread init_std·√C; the sinusoidal
            table is scaled to the same size (see __init__), so where a token is does not drown
            what it is.
        - subtle: a logit spread far below that (1/√C = 0.06, from E ~ N(0, 1/C) and a head scaled
          by 1/√C) passes every shape test yet learns far slower and never reads the question;
          tests/test_learning.py checks the spread and that a tiny model learns a copy task.
        - Norm γ = 1, β = 0; LayerScale γ = cfg.layer_scale (set by the module).
        """
        for module in self.modules():
            if isinstance(module, nn.Linear):
                # LeCun init: N(0, 1/fan_in) keeps unit variance from input to output of the matmul
                nn.init.normal_(module.weight, mean=0.0, std=module.in_features ** -0.5)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        nn.init.normal_(self.embed.weight, mean=0.0, std=self.cfg.init_std)  # spread init_std·√C
        self._scale_residual_outputs()
        if self.head is not None:                          # an untied head starts like the tied one
            nn.init.normal_(self.head.weight, mean=0.0, std=self.cfg.init_std)
        if self.copy is not None:                          # its gate starts biased towards copying
            self.copy.reset_priors()

    # --- pieces ---------------------------------------------------------------------------------
    def _check_ids(self, ids: Tensor, name: str) -> None:
        """Fail early, with the name of the argument, on ids that are not an int64 (B, length)."""
        if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.dtype != torch.long:
            got = type(ids)
            if isinstance(ids, torch.Tensor):
                got = f"{ids.dtype} tensor of shape {tuple(ids.shape)}"
            raise ValueError(f"{name} must be an int64 tensor of shape (B, length), got {got}")

    def _embed(self, ids: Tensor, start: int) -> Tensor:
        x = self.embed(ids) * self.embed_scale                          # (B, S or T, C)
        if self.pos is not None:
            x = self.pos(x, start)                                      # + PE[start : start + L]
        elif start + ids.size(1) > self.cfg.max_len:
            raise ValueError(f"sequence reaches position {start + ids.size(1)}, "
                             f"beyond max_len = {self.cfg.max_len}")
        return self.embed_dropout(x)

    def _logits(self, h: Tensor) -> Tensor:
        # Tied head (Press & Wolf 2017): reuse E as the output projection,
        # (B, T, C) @ (C, V) -> (B, T, V).
        return F.linear(h, self.embed.weight) if self.head is None else self.head(h)

    # --- public API -----------------------------------------------------------------------------
    def encode(self, src_ids: Tensor) -> tuple[Tensor, Tensor]:
        """src_ids (B, S) -> enc_out (B, S, C), src_mask (B, S) bool, True = real token."""
        self._check_ids(src_ids, "src_ids")
        src_mask = padding_mask(src_ids, self.cfg.pad_id)               # (B, S)
        x = self._embed(src_ids, 0)                                     # (B, S, C)
        enc_out = self.encoder(x, src_mask[:, None, :], self.rotary)   # keys masked: (B, 1, S)
        return enc_out, src_mask

    def forward(self, src_ids: Tensor, tgt_in_ids: Tensor) -> Tensor:
        """src_ids (B, S), tgt_in_ids (B, T) int64 -> logits (B, T, V). Teacher forcing: position t
        sees tgt_in_ids[:, :t+1] and the whole source."""
        enc_out, src_mask = self.encode(src_ids)
        self._check_ids(tgt_in_ids, "tgt_in_ids")
        T = tgt_in_ids.size(1)
        tgt_mask = padding_mask(tgt_in_ids, self.cfg.pad_id)            # (B, T)
        # Causal AND key padding: query t sees real target tokens at positions <= t.
        self_mask = causal_padding_mask(tgt_mask, T)                    # (B, T, T)
        x = self._embed(tgt_in_ids, 0)                                  # (B, T, C)
        h, _, _ = self.decoder(x, enc_out, self_mask, src_mask[:, None, :], rotary=self.rotary)
        logits = self._logits(h)                                        # (B, T, V)
        if self.copy is not None:
            # log p of the mixture (minillm.copying)
            copy_keys = self.copy.keys(enc_out)
            logits, _ = self.copy(h, logits, copy_keys, src_ids, src_mask, tgt_in_ids)
        return logits

    def make_cache(self, enc_out: Tensor, src_mask: Tensor,
                   src_ids: Tensor | None = None) -> DecoderCache:
        """Start decoding one batch of sources: each decoder layer's cross-attention keys/values
        (and the copy head's keys) are computed here, once, and reused by every decode_step. A model
        with a copy head needs the source ids too (what it copies)."""
        if (enc_out.dim() != 3 or src_mask.shape != enc_out.shape[:2]
                or src_mask.dtype != torch.bool):
            raise ValueError(f"make_cache expects enc_out (B, S, C) and a bool src_mask (B, S); "
                             f"got {tuple(enc_out.shape)} and {src_mask.dtype} "
                             f"{tuple(src_mask.shape)}")
        if self.copy is not None and (src_ids is None or src_ids.shape != src_mask.shape):
            raise ValueError("make_cache: a model with a copy head needs src_ids (B, S), "
                             "the tokens it may copy")
        # (B, H, S, D) each
        cross = [block.cross_attn.kv_cache(enc_out) for block in self.decoder.blocks]
        # (B, 0)
        empty = torch.zeros(enc_out.size(0), 0, dtype=torch.bool, device=enc_out.device)
        copy_keys = self.copy.keys(enc_out) if self.copy is not None else None  # (B, S, C)
        return DecoderCache([KVCache() for _ in self.decoder.blocks], cross, src_mask, empty,
                            src_ids if self.copy is not None else None, copy_keys)

    def decode_step(self, tgt_ids: Tensor, cache: DecoderCache, need_weights: bool = False):
        """Feed only the NEW target tokens tgt_ids (B, T_new), at positions cache.length,
        cache.length + 1, …

        Appends their self-attention keys/values to the cache and returns logits (B, T_new, V), or,
        with need_weights, (logits, cross, self_weights): lists over decoder layers of the
        cross-attention weights (B, H, T_new, S) and of the causal self-attention weights
        (B, H, T_new, T_all), T_all = cache.length after the step (zero where a query may not
        look: later positions and padding).
        Equal to the matching rows of forward() (tests/test_model.py checks it at every step).
        """
        self._check_ids(tgt_ids, "tgt_ids")
        if tgt_ids.size(0) != cache.src_mask.size(0):
            raise ValueError(f"tgt_ids has batch {tgt_ids.size(0)} but the cache holds "
                             f"{cache.src_mask.size(0)} rows")
        start, T_new = cache.length, tgt_ids.size(1)
        x = self._embed(tgt_ids, start)                 # (B, T_new, C) at positions start, …
        new_mask = padding_mask(tgt_ids, self.cfg.pad_id)               # (B, T_new)
        cache.tgt_mask = torch.cat([cache.tgt_mask, new_mask], dim=1)   # (B, T_all)
        cache.tgt_all_real = cache.tgt_all_real and bool(new_mask.all())
        # subtle: bottom-right-aligned causal mask: the T_new queries are the last T_new of T_all
        # keys. ONE new query among real tokens may see every key, so then no mask is needed at all
        # (the usual decoding step).
        if T_new == 1 and cache.tgt_all_real:
            self_mask = None
        else:
            self_mask = causal_padding_mask(cache.tgt_mask, T_new)      # (B, T_new, T_all)
        cross_mask = None if cache.src_all_real else cache.src_mask[:, None, :]   # (B, 1, S)
        h, cross, self_weights = self.decoder(x, None, self_mask, cross_mask, self_kv=cache.self_kv,
                                              cross_kv=cache.cross_kv, rotary=self.rotary,
                                              need_weights=need_weights)
        logits = self._logits(h)                                        # (B, T_new, V)
        if self.copy is not None:
            logits, cache.covered = self.copy(h, logits, cache.copy_keys, cache.src_ids,
                                              cache.src_mask, tgt_ids, cache.covered)
        return (logits, cross, self_weights) if need_weights else logits

    def num_params(self, non_embedding: bool = False) -> int:
        """Number of parameters (the tied matrix counted once); non_embedding leaves out E."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.embed.weight.numel() if non_embedding else n

    def flops_per_token(self, src_len: int, tgt_len: int, training: bool = True) -> float:
        """Matmul FLOPs per token (source and target tokens both counted) for one pair of lengths.

        A matmul (m × k) @ (k × n) costs 2·m·k·n FLOPs. Forward: 2 FLOPs per weight per token
        through each linear layer, plus QKᵀ and weights·V (2·2·L_q·L_k·C per layer), plus the
        head; backward costs twice the forward (Kaplan et al. 2020, §2.1), so training is 3×.
        Norms, softmax and elementwise work are left out (they are a few % here). The full T×T
        score matrix is counted, as it is computed.
        """
        cfg, C = self.cfg, self.cfg.d_model
        S, T = src_len, tgt_len
        ffn_weights = 3 * C * swiglu_hidden(cfg.d_ff) if cfg.ffn == "swiglu" else 2 * C * cfg.d_ff
        # q,k,v,o + FFN; QKᵀ and ·V
        enc_layer = 2 * S * (4 * C * C + ffn_weights) + 4 * S * S * C
        dec_layer = (2 * T * (4 * C * C + 2 * C * C + ffn_weights)   # self q,k,v,o; cross q,o; FFN
                     + 2 * S * 2 * C * C                              # cross k,v over the source
                     + 4 * T * T * C + 4 * T * S * C)                 # self and cross attention
        head = 2 * T * C * cfg.vocab_size
        if cfg.copy:                          # copy head: q over T, k over S, T×S scores, gate
            head += 2 * T * C * C + 2 * S * C * C + 2 * T * S * C + 2 * T * C
        forward = cfg.n_encoder_layers * enc_layer + cfg.n_decoder_layers * dec_layer + head
        return (3 if training else 1) * forward / (S + T)
