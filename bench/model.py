"""Benchmark: training-step throughput of minillm's Seq2Seq against a torch.nn.Transformer reference.

One training step = forward, masked cross-entropy, backward, AdamW update, on random token ids (no padding,
so every model does the same work). Three models are measured in the same run, interleaved round by round
so that a busy machine slows them alike:

  fused       minillm Seq2Seq, cfg.fused=True  (F.scaled_dot_product_attention, F.layer_norm)
  hand        minillm Seq2Seq, cfg.fused=False (the hand-written attention and norms)
  reference   torch.nn.Transformer with the same width, depth, heads, feed-forward size (GELU, pre-norm) and
              vocabulary, plus the same tied embedding/head and sinusoidal positions
  compiled    the fused model under torch.compile (what train.py --compile runs); its compile time, spent in
              the untimed warm-up step, is printed apart

Printed: parameters, FLOPs per token (Seq2Seq.flops_per_token; the reference does the same matmuls), seconds
per step (best and median of the timed steps), tokens/s (source + target tokens), achieved GFLOP/s and MFU
from the best step, against a matmul peak measured here (fp32 on CPU; bf16 under autocast on CUDA), and
the ratios fused/reference and hand/reference.
Targets: fused >= 1.0x, hand-written >= 0.8x.

    python bench/model.py [--config small] [--batch 32] [--src-len 64] [--tgt-len 64] [--steps 5]
                          [--rounds 3] [--threads N] [--device cpu|cuda|auto]
"""
import argparse
import math
import os
import pathlib
import statistics
import sys
import time
import warnings

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
from minillm.layers import sinusoidal_table  # noqa: E402
from minillm.machinery.device import DEVICES, resolve_device  # noqa: E402
from minillm.model import ModelConfig, Seq2Seq  # noqa: E402
from minillm.transformer import MODEL_PRESETS  # noqa: E402


class TorchTransformerReference(nn.Module):
    """The peer: torch.nn.Transformer (pre-norm, GELU, batch_first) with minillm's embedding, positions and
    tied head around it, so the two models have the same parameters up to bias layout."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        C = cfg.d_model
        self.embed = nn.Embedding(cfg.vocab_size, C)
        self.register_buffer("pe", sinusoidal_table(cfg.max_len, C), persistent=False)
        self.dropout = nn.Dropout(cfg.dropout)
        with warnings.catch_warnings():   # "enable_nested_tensor ... norm_first": irrelevant in training
            warnings.simplefilter("ignore", UserWarning)
            self.transformer = nn.Transformer(C, cfg.n_heads, cfg.n_encoder_layers, cfg.n_decoder_layers,
                                              cfg.d_ff, cfg.dropout, activation="gelu", batch_first=True,
                                              norm_first=True)
        # nn.MultiheadAttention applies `dropout` to the attention weights too; minillm has a separate
        # cfg.attention_dropout (0 by default). Match it so both models do the same work.
        for module in self.transformer.modules():
            if isinstance(module, nn.MultiheadAttention):
                module.dropout = cfg.attention_dropout

    def forward(self, src_ids, tgt_in_ids):
        S, T, C = src_ids.size(1), tgt_in_ids.size(1), self.cfg.d_model
        src_pad = src_ids == self.cfg.pad_id                                   # torch: True = ignore
        tgt_pad = tgt_in_ids == self.cfg.pad_id
        future = torch.ones(T, T, dtype=torch.bool, device=src_ids.device).triu(1)   # True = not allowed
        x = self.dropout(self.embed(src_ids) * math.sqrt(C) + self.pe[:S])     # (B, S, C)
        y = self.dropout(self.embed(tgt_in_ids) * math.sqrt(C) + self.pe[:T])  # (B, T, C)
        h = self.transformer(x, y, tgt_mask=future, src_key_padding_mask=src_pad, tgt_key_padding_mask=tgt_pad,
                             memory_key_padding_mask=src_pad, tgt_is_causal=True)
        return F.linear(h / math.sqrt(C), self.embed.weight)                   # (B, T, V)


def matmul_peak_gflops(device, dtype, n, repeats=5):
    """Best-of-`repeats` GFLOP/s of an n×n @ n×n matmul: the practical peak for this device and dtype."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(repeats + 1):
        sync(device)
        t0 = time.perf_counter()
        for _ in range(4 if device.type == "cuda" else 1):
            a @ b
        sync(device)
        best = min(best, (time.perf_counter() - t0) / (4 if device.type == "cuda" else 1))
    return 2 * n ** 3 / best / 1e9


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


class Runner:
    """A model, its AdamW and one fixed batch; `step()` runs one training step."""

    def __init__(self, name, model, batch, device):
        self.name, self.model, self.device = name, model.to(device).train(), device
        # The same optimiser for every model: PyTorch's fused AdamW kernel (CPU and CUDA).
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4, weight_decay=0.1, fused=True)
        self.src, self.tgt_in, self.tgt_out = (t.to(device) for t in batch)
        self.times = []       # wall seconds per step
        self.cpu_times = []   # CPU seconds this process used per step (all its threads)

    def step(self):
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            logits = self.model(self.src, self.tgt_in)                         # (B, T, V)
            loss = F.cross_entropy(logits.flatten(0, 1).float(), self.tgt_out.flatten(), ignore_index=0)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def timed(self, steps):
        for _ in range(steps):
            sync(self.device)
            t0, c0 = time.perf_counter(), time.process_time()
            self.step()
            sync(self.device)
            self.times.append(time.perf_counter() - t0)
            self.cpu_times.append(time.process_time() - c0)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="small", choices=sorted(MODEL_PRESETS))
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--src-len", type=int, default=64)
    p.add_argument("--tgt-len", type=int, default=64)
    p.add_argument("--steps", type=int, default=2, help="timed steps per model per round")
    p.add_argument("--rounds", type=int, default=3, help="rounds; models are interleaved within each")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per model first")
    p.add_argument("--device", default="cpu", choices=DEVICES)
    p.add_argument("--models", default="fused,hand,reference,compiled")
    p.add_argument("--threads", type=int, default=0,
                   help="CPU threads (0 = PyTorch's default). On a shared machine 1 thread gives steadier "
                        "figures: with 2, a step waits for whichever core another process is using")
    args = p.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    try:
        device = resolve_device(args.device)
    except ValueError as err:
        p.error(str(err))

    cfg = ModelConfig.preset(args.config)
    B, S, T = args.batch, args.src_len, args.tgt_len
    gen = torch.Generator().manual_seed(0)
    batch = (torch.randint(3, cfg.vocab_size, (B, S), generator=gen),
             torch.randint(3, cfg.vocab_size, (B, T), generator=gen),
             torch.randint(3, cfg.vocab_size, (B, T), generator=gen))
    builders = {
        "fused": lambda: Seq2Seq(ModelConfig.preset(args.config, fused=True)),
        "hand": lambda: Seq2Seq(ModelConfig.preset(args.config, fused=False)),
        "reference": lambda: TorchTransformerReference(cfg),
        "compiled": lambda: torch.compile(Seq2Seq(ModelConfig.preset(args.config, fused=True))),
    }
    names = args.models.split(",")
    runners = []
    for name in names:
        torch.manual_seed(0)
        runners.append(Runner(name, builders[name](), batch, device))

    peak_dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    peak = matmul_peak_gflops(device, peak_dtype, 8192 if device.type == "cuda" else 2048)
    with torch.device("meta"):                                     # shapes only: FLOPs need no weights
        flops_tok = Seq2Seq(cfg).flops_per_token(S, T)
    load = ", load average %.1f (%d cores)" % (os.getloadavg()[0], os.cpu_count()) if hasattr(os, "getloadavg") else ""
    print(f"device {device} ({torch.get_num_threads()} CPU threads{load}), torch {torch.__version__}, "
          f"{'bf16 autocast' if device.type == 'cuda' else 'fp32'}, AdamW(fused=True)")
    print(f"config {args.config}: V={cfg.vocab_size} C={cfg.d_model} H={cfg.n_heads} "
          f"layers={cfg.n_encoder_layers}+{cfg.n_decoder_layers} d_ff={cfg.d_ff} dropout={cfg.dropout}; "
          f"batch {B} x ({S} source + {T} target) = {B * (S + T)} tokens/step")
    print(f"matmul peak ({str(peak_dtype).replace('torch.', '')}): {peak:,.1f} GFLOP/s; "
          f"training FLOPs/token: {flops_tok / 1e6:,.2f} MFLOP")

    for r in runners:
        t0 = time.perf_counter()
        for _ in range(args.warmup):
            r.step()
        if r.name == "compiled":
            print(f"compiled: the warm-up step took {time.perf_counter() - t0:.1f} s (compiling forward "
                  "and backward)")
    for _ in range(args.rounds):
        for r in runners:
            r.timed(args.steps)

    # Figures from the BEST step of each model: on a shared machine other processes only ever slow a
    # step down, so the fastest one is the closest to what the model itself costs. Medians alongside, and
    # the CPU time the process used: with --threads 1 it hardly depends on what else runs.
    tokens = B * (S + T)
    results = {}
    print(f"{'model':<10} {'params':>11} {'best s/step':>12} {'median':>7} {'CPU s/step':>11} {'tokens/s':>9} "
          f"{'GFLOP/s':>8} {'MFU':>6}")
    for r in runners:
        best, median, cpu = min(r.times), statistics.median(r.times), min(r.cpu_times)
        tok_s = tokens / best
        gflops = flops_tok * tok_s / 1e9
        params = sum(q.numel() for q in r.model.parameters())
        results[r.name] = (tok_s, tokens / median, tokens / cpu)
        print(f"{r.name:<10} {params:>11,} {best:>12.3f} {median:>7.3f} {cpu:>11.3f} {tok_s:>9,.0f} {gflops:>8.1f} "
              f"{gflops / peak:>6.1%}")
    if "reference" in results:
        for name, target in (("fused", 1.0), ("hand", 0.8)):
            if name in results:
                ratio, ratio_median, ratio_cpu = (a / b for a, b in zip(results[name], results["reference"]))
                verdict = "meets" if ratio >= target else "MISSES"
                print(f"{name}/reference: {ratio:.2f}x on best steps ({verdict} the {target:.1f}x target); "
                      f"{ratio_median:.2f}x on medians; {ratio_cpu:.2f}x on CPU time")
    if "compiled" in results and "fused" in results:
        ratio, ratio_median, ratio_cpu = (a / b for a, b in zip(results["compiled"], results["fused"]))
        print(f"compiled/fused (eager): {ratio:.2f}x on best steps; {ratio_median:.2f}x on medians; "
              f"{ratio_cpu:.2f}x on CPU time")

if __name__ == "__main__":
    main()
