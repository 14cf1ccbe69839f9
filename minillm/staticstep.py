"""The decode step at the physical limit: fixed shapes over a preallocated cache, for torch.compile.

A cached decoding step (``Seq2Seq.decode_step``) reads every decoder weight once and does little
else, yet at batch 1 it ran at about 56 % of the speed of reading those weights alone
(bench/generate.py): the rest was Python and the dispatch of some hundred small operations per
token. ``torch.compile`` can fuse those into a few kernels, but only for a function it can trace
once and replay: the eager step's cache grows (a new shape every token: a recompilation every
token) and decides things in Python from tensor values (a graph break). So this module writes the
same step again, with fixed shapes:
  * the self-attention keys and values live in buffers of ``length`` positions made once
    (B, H, length, D); step t writes position t in place (``index_copy_``) and attends to all
    ``length`` positions through a mask that hides those after t;
  * the position is a tensor, not a Python int, so one traced graph serves every step;
  * q, k and v come from ONE matrix per layer, stacked once here, not three matmuls;
  * the cross-attention keys and values (and the copy head's keys) are computed once, as before;
  * attention is the hand-written ``attention.scaled_dot_product_attention``: compiled, its few
    operations fuse into a handful of kernels, which on a CPU beat the fused kernel's fixed
    overhead at one query per row (bench/README.md, "Decoding at the limit").
``StaticStep(..., compile=False)`` runs the same code eagerly: tests/test_staticstep.py proves it
equal to ``decode_step``. ``compile=True`` wraps it in ``torch.compile``; the first call compiles
(tens of seconds on a CPU), every later call with the same shapes replays.

Tensor symbols: B batch, S source length, L cache length (positions), C model width, H heads,
D head width, V vocabulary.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from minillm.attention import scaled_dot_product_attention

Tensor = torch.Tensor


class StaticStep:
    """The decoder of ``model`` for B sources, one token per call, over caches of ``length``
    positions. ``step(tokens (B, 1), position (0-d long tensor)) -> logits (B, V)`` in fp32."""

    def __init__(self, model, src: Tensor, length: int, compile: bool = False):
        cfg = model.cfg
        if length > cfg.max_len:
            raise ValueError(f"a static cache of {length} positions is longer than the model's "
                             f"max_len = {cfg.max_len}")
        self.model = model
        self.length = length
        self.n_heads = cfg.n_heads
        # subtle: every new source length is a new shape, and a new shape a new compilation (tens
        # of seconds). Sources are padded up to a power of two (at most the longest the model reads,
        # generation.source_length), so questions share a few compiled steps instead of one each;
        # padding is masked, as in any batch.
        longest = cfg.max_src_len or cfg.max_len
        bucket = min(longest, max(16, 1 << (src.size(1) - 1).bit_length()))
        if src.size(1) < bucket:
            src = F.pad(src, (0, bucket - src.size(1)), value=cfg.pad_id)      # (B, S_bucket)
        enc_out, src_mask = model.encode(src)                           # (B, S, C), (B, S)
        B, S, C = enc_out.shape
        D = C // cfg.n_heads
        blocks = model.decoder.blocks
        self.cross = [block.cross_attn.kv_cache(enc_out) for block in blocks]   # (B, H, S, D)
        self.keys = [enc_out.new_zeros(B, cfg.n_heads, length, D) for _ in blocks]
        self.values = [enc_out.new_zeros(B, cfg.n_heads, length, D) for _ in blocks]
        self.qkv = [self.stacked(block.self_attn) for block in blocks]  # (3C, C), (3C,) or None
        self.cross_mask = src_mask[:, None, None, :]                     # (B, 1, 1, S)
        self.src_ids, self.src_mask = src, src_mask
        self.copy_keys = model.copy.keys(enc_out) if model.copy is not None else None  # (B, S, C)
        self.covered = None if model.copy is None else enc_out.new_zeros(B, S)
        self.positions = torch.arange(length, device=src.device)         # (L,)
        # dynamic=False: a new shape compiles anew rather than into slower shape-generic kernels. On
        # a GPU, "reduce-overhead" also records the step as a CUDA graph: one launch a step.
        mode = "reduce-overhead" if src.is_cuda else "default"
        if compile:
            self.run = torch.compile(self.eager_step, dynamic=False, mode=mode)
        else:
            self.run = self.eager_step
        self.steps = 0

    def step(self, tokens: Tensor, position: Tensor) -> Tensor:
        """tokens (B, 1) at `position` (a 0-d long tensor) -> next-token logits (B, V) in fp32."""
        self.steps += 1
        return self.run(tokens, position)

    @staticmethod
    def stacked(attn) -> tuple[Tensor, Tensor | None]:
        """The q, k and v projections as one matrix (3C, C) and bias (3C,): one matmul a step."""
        weight = torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight])
        if attn.q_proj.bias is None:
            return weight, None
        return weight, torch.cat([attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias])

    def heads(self, x: Tensor) -> Tensor:
        B, T, C = x.shape
        return x.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2)   # (B, H, T, D)

    def merge(self, out: Tensor) -> Tensor:
        B, H, T, D = out.shape
        return out.transpose(1, 2).reshape(B, T, H * D)                 # (B, H, T, D) -> (B, T, C)

    def embed(self, tokens: Tensor, position: Tensor) -> Tensor:
        """As ``Seq2Seq._embed`` at one position given as a tensor: E[id]·√C (+ PE[position])."""
        model = self.model
        x = model.embed(tokens) * model.embed_scale                      # (B, 1, C)
        if model.pos is not None:
            pe = model.pos.table.index_select(0, position.view(1))        # (1, C)
            x = x + pe.to(x.dtype)
        return x

    def rotate(self, x: Tensor, position: Tensor) -> Tensor:
        """RoPE (Su et al. 2021) at one position given as a tensor, as ``RotaryEmbedding``."""
        rotary = self.model.rotary
        cos = rotary.cos.index_select(0, position.view(1)).to(x.dtype)   # (1, D)
        sin = rotary.sin.index_select(0, position.view(1)).to(x.dtype)
        half = x.size(-1) // 2
        rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)     # (B, H, 1, D)
        return x * cos + rotated * sin

    def self_attention(self, i: int, block, x: Tensor, position: Tensor) -> Tensor:
        """Block i's causal self-attention for the new token: its k and v written at `position`
        into the static cache, its query attending to positions <= `position`."""
        weight, bias = self.qkv[i]
        q, k, v = F.linear(x, weight, bias).split(x.size(-1), dim=-1)    # 3 × (B, 1, C)
        q, k, v = self.heads(q), self.heads(k), self.heads(v)            # (B, H, 1, D) each
        if self.model.rotary is not None:
            q, k = self.rotate(q, position), self.rotate(k, position)
        self.keys[i].index_copy_(2, position.view(1), k)                 # (B, H, L, D) in place
        self.values[i].index_copy_(2, position.view(1), v)
        # subtle: positions after `position` hold zeros (or an earlier answer's keys); the mask
        # gives them weight exactly 0, as if the cache ended at `position`.
        seen = (self.positions <= position).view(1, 1, 1, self.length)  # (1, 1, 1, L)
        out, _ = scaled_dot_product_attention(q, self.keys[i], self.values[i], seen)  # (B, H, 1, D)
        return block.self_attn.out_proj(self.merge(out))                 # (B, 1, C)

    def cross_attention(self, i: int, block, x: Tensor) -> Tensor:
        """Block i's cross-attention: the new token's query against the source's cached k, v."""
        q = self.heads(block.cross_attn.q_proj(x))                       # (B, H, 1, D)
        kv = self.cross[i]
        out, _ = scaled_dot_product_attention(q, kv.k, kv.v, self.cross_mask)   # (B, H, 1, D)
        return block.cross_attn.out_proj(self.merge(out))                # (B, 1, C)

    def eager_step(self, tokens: Tensor, position: Tensor) -> Tensor:
        """tokens (B, 1) at `position` (0-d long) -> next-token logits (B, V): the decoder of
        ``transformer.DecoderBlock`` in eval mode (no dropout), pre-norm, block after block."""
        model = self.model
        x = self.embed(tokens, position)                                 # (B, 1, C)
        for i, block in enumerate(model.decoder.blocks):
            x = x + block.scale1(self.self_attention(i, block, block.norm1(x), position))
            x = x + block.scale2(self.cross_attention(i, block, block.norm2(x)))
            x = x + block.scale3(block.ffn(block.norm3(x)))
        h = model.decoder.norm(x)                                        # (B, 1, C)
        # the output head, tied to E or not, as in Seq2Seq: (B, 1, C) -> (B, 1, V)
        head = model.embed.weight if model.head is None else model.head.weight
        logits = F.linear(h, head)
        if model.copy is not None:
            logits, covered = model.copy(h, logits, self.copy_keys, self.src_ids, self.src_mask,
                                         tokens, self.covered)
            self.covered.copy_(covered)                                  # (B, S) in place
        return logits[:, -1, :].float()                                  # (B, V)

    def keep(self, index: Tensor) -> None:
        """Reorder the batch rows in place (beam search: beam k continues beam index[k]); the
        number of rows stays, so the shapes, and a compiled step, stay valid. Before the first step
        the rows may also be repeated (beam search's K copies of each question)."""
        resized = index.numel() != self.src_ids.size(0)
        if resized and self.steps:
            raise ValueError(f"a static cache keeps its {self.src_ids.size(0)} rows once "
                             f"decoding has begun; got {index.numel()}")
        state = self.keys + self.values + ([self.covered] if self.covered is not None else [])
        if resized:                                      # before the first step: new buffers
            state = [buffer.index_select(0, index) for buffer in state]
            n = len(self.keys)
            self.keys, self.values = state[:n], state[n:2 * n]
            self.covered = state[2 * n] if self.covered is not None else None
        else:                                            # while decoding: the same buffers
            for buffer in state:
                buffer.copy_(buffer.index_select(0, index))
        for kv in self.cross:
            kv.reorder(index)
        self.src_ids = self.src_ids.index_select(0, index)
        self.src_mask = self.src_mask.index_select(0, index)
        self.cross_mask = self.cross_mask.index_select(0, index)
        if self.copy_keys is not None:
            self.copy_keys = self.copy_keys.index_select(0, index)
