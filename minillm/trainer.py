"""The training loop: configuration, one optimisation step, evaluation, checkpoints, progress.

Read `Trainer.train_step` first: it is the whole algorithm, top to bottom, in the order it runs:

    autocast forward over the micro-batches -> loss normalised by the total real-token count -> backward
    -> unscale -> NaN/Inf guard -> clip -> optimizer step -> schedule step -> EMA update -> zero_grad

Everything else (data, evaluation, checkpoints, logging, several processes) is plumbing around it.

Precision: float32 on the CPU; on CUDA bf16 autocast by default (same exponent range as float32, so no loss
scaling), or fp16 autocast with a GradScaler (Micikevicius et al. 2018, "Mixed Precision Training").
Several devices: launch with `torchrun --nproc_per_node=N train.py ...` (one process per device, PyTorch
DistributedDataParallel; Li et al. 2020). Rank 0 alone writes files and prints.
"""
from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import math
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from minillm import checkpoint as ckpt
from minillm.data import Seq2SeqDataset, TokenBatchSampler, clean_pairs, collate, load_pairs, split_pairs
from minillm.generation import GenerationConfig, decode_ids
from minillm.losses import masked_cross_entropy
from minillm.metrics import TokenMetrics, distinct_share, mismatched_sources, text_scores
from minillm.model import ModelConfig, Seq2Seq
from minillm.optim import EMA, Schedule, make_optimizer, torch_schedule
from minillm.tokenizer import BPETokenizer


# fields with a fixed set of values (train.py turns these into argparse choices)
CHOICES = {"model": ("small", "base"), "decay": ("cosine", "linear"), "device": ("auto", "cpu", "cuda"),
           "precision": ("auto", "fp32", "bf16", "fp16"), "select_by": ("chrf", "nll")}


@dataclass
class TrainConfig:
    """Everything a run needs besides the model's own sizes. Defaults are the `small` preset (CPU)."""
    # --- data
    data: str = "data/sample.json"     # JSON list / JSONL / CSV of question-answer pairs
    out: str = "runs/small"            # run directory: tokenizer, log.jsonl, model.pt, state-*.pt
    val_fraction: float = 0.1          # share of pairs (by hash of the question) held out for evaluation
    test_fraction: float = 0.0         # share held out and never touched here (for a final report)
    vocab_size: int = 2000             # BPE vocabulary incl. 3 special tokens: 2000 suits the 60 KB sample, ~8000 a few MB
    max_src_len: int = 128             # tokens; longer questions are cut (the data loader counts them)
    max_tgt_len: int = 192             # tokens; longer answers are cut without <eos>
    # --- model (None = the preset's value)
    model: str = "small"               # ModelConfig preset: "small" (~8M params, CPU) or "base" (~100M, GPU)
    d_model: int | None = None         # C, residual width
    n_heads: int | None = None         # H, attention heads
    n_layers: int | None = None        # encoder layers = decoder layers
    d_ff: int | None = None            # feed-forward hidden width
    dropout: float | None = None       # probability; 0.05 in the small preset, 0.1 in base (Vaswani et al. 2017, §5.4)
    # --- batch
    batch_tokens: int = 1024           # padded tokens (source + target) per micro-batch per process; small for 2 CPU cores
    grad_accum: int = 1                # micro-batches per optimiser step per process
    # --- optimisation
    lr: float = 1e-3                   # peak learning rate; 2e-3 and 4e-3 learned less per step (bench/learning.py)
    min_lr: float = 1e-4               # floor at the end of the decay (and after max_steps)
    warmup_steps: int = 60             # linear warmup from lr/warmup_steps (Goyal et al. 2017); 10% of a 600-step run
    decay: str = "linear"              # "linear" (as Hugging Face's get_linear_schedule_with_warmup) or "cosine" (SGDR)
    torch_schedule: bool = False       # True: PyTorch's LinearLR/CosineAnnealingLR instead of the hand-written one
    weight_decay: float = 0.01         # decoupled, on Linear matrices only (optim.param_groups); BART's 0.01
    beta1: float = 0.9                 # AdamW first-moment decay
    beta2: float = 0.999               # AdamW second-moment decay; Adam's default (0.95 is GPT-3's, for huge batches)
    grad_clip: float = 1.0             # max global L2 norm of the gradient; 0 = no clipping
    label_smoothing: float = 0.0       # Szegedy et al. 2016 (Vaswani et al. used 0.1); off in the recipe measured against BART
    ema_decay: float = 0.0             # EMA of the weights, ~1/(1-d)-step memory; 0 = none: 0.995 lagged on 600-step runs
    ema_warmup: bool = True            # ramp the decay up as min(d, (1+n)/(10+n)) (TensorFlow EMA)
    max_steps: int = 500               # optimiser steps; the schedule decays to min_lr at this step
    time_budget: float = 0.0           # minutes (0 = none); after 15 steps max_steps shrinks to what fits, then a hard stop
    # --- precision and speed
    device: str = "auto"               # "auto" (cuda if available), "cpu" or "cuda"
    precision: str = "auto"            # "auto" (bf16 on CUDA, fp32 on CPU), "fp32", "bf16" or "fp16"
    compile: bool = False              # torch.compile the model for training (checkpoints stay uncompiled)
    threads: int = 0                   # CPU threads for PyTorch (0 = its default, one per core); 1 on a shared, busy machine
    # --- robustness
    max_bad_steps: int = 5             # consecutive non-finite steps before the run aborts
    seed: int = 1337                   # model init, data order, dropout
    # --- evaluation, logging, checkpoints
    eval_every: int = 100              # steps between evaluations (and at the last step)
    eval_generate: int = 16            # validation questions answered greedily for BLEU/chrF (0 = none)
    eval_max_new_tokens: int = 48      # answer length cap during evaluation
    print_samples: int = 2             # generated answers printed at each evaluation
    log_every: int = 10                # steps between JSONL "train" records (1 = every step)
    save_every: int = 100              # steps between full training-state checkpoints
    select_by: str = "chrf"            # model.pt keeps the best evaluation by greedy chrF ("nll" when eval_generate is 0) or by "nll"
    keep_last: int = 2                 # training-state files kept (the best model is model.pt)

    def __post_init__(self):
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"TrainConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("max_steps", "batch_tokens", "grad_accum", "eval_every", "log_every", "save_every",
                     "keep_last", "max_bad_steps", "vocab_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)!r}")
        if not 0 <= self.min_lr <= self.lr:
            raise ValueError(f"TrainConfig needs 0 <= min_lr <= lr, got min_lr={self.min_lr}, lr={self.lr}")
        if not (0 <= self.val_fraction < 1 and 0 <= self.test_fraction < 1):
            raise ValueError("TrainConfig.val_fraction and test_fraction must be in [0, 1)")
        if self.warmup_steps >= self.max_steps:
            raise ValueError(f"TrainConfig.warmup_steps ({self.warmup_steps}) must be below max_steps "
                             f"({self.max_steps})")

    @classmethod
    def preset(cls, name: str, **overrides) -> "TrainConfig":
        """`small`: the CPU defaults above. `base`: a ~100M model on one GPU, bf16, bigger batches."""
        presets = {"small": {},
                   "base": dict(model="base", out="runs/base", vocab_size=8000, batch_tokens=16384, lr=6e-4,
                                min_lr=6e-5, warmup_steps=500, max_steps=20000, ema_decay=0.999,
                                eval_every=1000, save_every=1000, eval_generate=64, log_every=50)}
        if name not in presets:
            raise ValueError(f"unknown training preset {name!r}; expected one of {sorted(presets)}")
        return cls(**{**presets[name], **overrides})

    @classmethod
    def field_help(cls) -> dict[str, str]:
        """Each field's trailing comment above, for `train.py --help` (one source of truth)."""
        src = inspect.getsource(cls)
        return dict(re.findall(r"^\s+(\w+): [^=\n]+= [^#\n]+#\s*(.+)$", src, flags=re.M))


# ----------------------------------------------------------------------------------------------------------
# Devices, precision, peak FLOP/s for MFU

# Dense bf16/fp16 tensor-core peaks, FLOP/s, from NVIDIA's data sheets (no sparsity). MFU = achieved model
# FLOP/s / peak (Chowdhery et al. 2022, PaLM, appendix B).
GPU_PEAK_FLOPS = {"H200": 989e12, "H100 PCIe": 756e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12,
                  "L4": 121e12, "A10": 125e12, "RTX 4090": 165e12, "RTX 3090": 71e12, "V100": 125e12,
                  "T4": 65e12}


def peak_flops(device: torch.device) -> tuple[float, str]:
    """(peak FLOP/s, where the figure comes from). CPU: a measured float32 matmul, on the threads torch uses."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, flops in GPU_PEAK_FLOPS.items():  # first match wins: "H100 PCIe" is listed before "H100"
            if key in name:
                return flops, f"{name}: data-sheet bf16 peak"
        return float("nan"), f"{name}: not in the peak table, MFU not shown"
    # subtle: not torch.randn: drawing from the global generator here would shift every later dropout mask
    # of a resumed run (the RNG state was just restored) and break the exact resume.
    n, reps, a = 512, 0, torch.full((512, 512), 0.5)
    start = time.perf_counter()
    while time.perf_counter() - start < 0.2:
        a @ a  # noqa: B018  (the product itself is the measurement)
        reps += 1
    return 2 * n ** 3 * reps / (time.perf_counter() - start), f"CPU, measured fp32 matmul on {torch.get_num_threads()} threads"


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was requested but torch.cuda.is_available() is False "
                           "(no GPU, or a CPU-only PyTorch build)")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def resolve_precision(precision: str, device: torch.device) -> str:
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if precision != "fp32" and device.type != "cuda":
        raise ValueError(f"--precision {precision} needs CUDA; on the CPU minillm trains in fp32")
    return precision


def setup_distributed() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's environment; (0, 1, 0) for a plain `python train.py`."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, 0
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    return dist.get_rank(), world, local_rank


@torch.no_grad()
def score_items(logits_fn, items: list, pad_id: int, batch_tokens: int, device) -> TokenMetrics:
    """Teacher-forced token metrics over (src_ids, tgt_in_ids, tgt_out_ids) items, in length-sorted batches
    of at most batch_tokens padded tokens. logits_fn(src_ids (B, S), tgt_in_ids (B, T)) -> logits (B, T, V):
    any encoder-decoder model (bench/learning.py scores a Hugging Face BART with it too)."""
    metrics = TokenMetrics(pad_id=pad_id, ks=(1, 5))
    lengths = [(len(src), len(tgt_in)) for src, tgt_in, _ in items]
    for indices in TokenBatchSampler(lengths, batch_tokens, shuffle=False):
        b = {k: v.to(device) for k, v in collate([items[i] for i in indices], pad_id).items()}
        metrics.update(logits_fn(b["src_ids"], b["tgt_in_ids"]).float(), b["tgt_out_ids"])
    return metrics


def teacher_forced_record(logits_fn, items: list, pad_id: int, batch_tokens: int, device, n_chars: int) -> dict:
    """The teacher-forced part of an evaluation record, one definition for minillm and the benchmark's peer:
    nll, perplexity, (top-5) accuracy, nll_per_char (nats per answer character, comparable between
    vocabularies; n_chars = characters of the answers scored) and, with at least 2 items, cond_gain
    (NLL with each question swapped for another, minus NLL with its own: minillm.metrics.mismatched_sources)."""
    metrics = score_items(logits_fn, items, pad_id, batch_tokens, device)
    record = {**metrics.summary(), "nll_per_char": metrics.nll_sum / n_chars}
    if len(items) >= 2:
        swapped = score_items(logits_fn, mismatched_sources(items), pad_id, batch_tokens, device)
        record["cond_gain"] = swapped.mean_nll - record["nll"]
    return record


def answers_record(hypotheses: list[str], references: list[str]) -> dict:
    """The generated part of an evaluation record: corpus BLEU, chrF and the share of distinct answers."""
    scores = text_scores(hypotheses, references)
    return {"bleu": scores["bleu"], "chrf": scores["chrf"], "n_generated": len(hypotheses),
            "distinct": distinct_share(hypotheses)}


class TrainingAborted(RuntimeError):
    """Too many non-finite steps in a row; the last good state has been saved."""


# ----------------------------------------------------------------------------------------------------------
# The trainer

class Trainer:
    """Owns the model, optimiser, schedule, EMA, data stream and run directory of one training run."""

    def __init__(self, cfg: TrainConfig, resume: bool = False, log=print):
        self.cfg = cfg
        self.rank, self.world, local_rank = setup_distributed()
        self.is_main = self.rank == 0
        self.log = log if self.is_main else (lambda *a, **k: None)
        self.device = resolve_device(cfg.device)
        if self.device.type == "cuda" and self.world > 1:
            self.device = torch.device("cuda", local_rank)
        self.precision = resolve_precision(cfg.precision, self.device)
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)   # subtle: oversubscribed cores make OpenMP threads wait on each other
        self.out = Path(cfg.out)
        state = None
        if resume:
            state = ckpt.latest_state(self.out, map_location="cpu", log=self.log)
            if state is None:
                raise FileNotFoundError(f"--resume: no readable state-*.pt checkpoint in {self.out}")
            self.log(f"resuming from {state['path']} (step {state['step']})")
        elif ckpt.state_files(self.out):
            raise FileExistsError(f"{self.out} already holds a run; pass --resume to continue it or choose "
                                  f"another --out")
        self.out.mkdir(parents=True, exist_ok=True)
        if not resume and self.is_main:
            (self.out / "log.jsonl").unlink(missing_ok=True)   # a fresh run starts a fresh log

        # --- data: load, clean, split by a hash of the question (the same split on every rank)
        pairs, report = clean_pairs(load_pairs(cfg.data))
        splits = split_pairs(pairs, cfg.val_fraction, cfg.test_fraction)
        self.splits = splits
        self.log(f"data: {cfg.data}: {report.pairs_out} pairs after cleaning ({report}); "
                 f"train {len(splits['train'])}, val {len(splits['val'])}, test {len(splits['test'])}")
        if not splits["train"]:
            raise ValueError(f"{cfg.data}: no training pairs left after the split ({report.pairs_out} pairs, "
                             f"--val-fraction {cfg.val_fraction}, --test-fraction {cfg.test_fraction}); "
                             f"give more pairs or lower the fractions")
        if not splits["val"]:
            # Documented fallback for a tiny file: train anyway, but say that nothing will be evaluated.
            self.log(f"warning: {cfg.data}: no validation pairs ({report.pairs_out} pairs, --val-fraction "
                     f"{cfg.val_fraction}); training without evaluation, model.pt will hold the final weights")
        self.tokenizer = self._tokenizer(state)
        self.train_set = Seq2SeqDataset(splits["train"], self.tokenizer, cfg.max_src_len, cfg.max_tgt_len)
        self.val_set = (Seq2SeqDataset(splits["val"], self.tokenizer, cfg.max_src_len, cfg.max_tgt_len)
                        if splits["val"] else None)
        # characters of the validation answers as the model sees them (cut to max_tgt_len), for NLL per char
        eos = self.tokenizer.eos_id
        self.val_chars = (sum(len(self.tokenizer.decode([t for t in out if t != eos])) + (out[-1] == eos)
                              for _, _, out in self.val_set.items) if self.val_set else 0)   # <eos> counts as one
        self.sampler = TokenBatchSampler(self.train_set.lengths, cfg.batch_tokens, seed=cfg.seed,
                                         rank=self.rank, world_size=self.world)
        self._batch_iter = None

        # --- model: identical initial weights on every rank (DDP also broadcasts rank 0's)
        torch.manual_seed(cfg.seed)
        sizes = {k: v for k, v in dict(d_model=cfg.d_model, n_heads=cfg.n_heads, n_encoder_layers=cfg.n_layers,
                                       n_decoder_layers=cfg.n_layers, d_ff=cfg.d_ff, dropout=cfg.dropout).items()
                 if v is not None}
        max_len = max(cfg.max_src_len, cfg.max_tgt_len)
        model_cfg = (ModelConfig(**state["model_config"]) if state else
                     ModelConfig.preset(cfg.model, vocab_size=self.tokenizer.vocab_size, max_len=max_len, **sizes))
        self.model = Seq2Seq(model_cfg).to(self.device)   # the plain module: EMA, eval, checkpoints use it
        torch.manual_seed(cfg.seed + self.rank)            # dropout masks differ between ranks
        self.optimizer = make_optimizer(self.model, cfg.lr, cfg.weight_decay, (cfg.beta1, cfg.beta2),
                                        fused=True if self.device.type == "cuda" else None)
        kw = dict(max_lr=cfg.lr, warmup_steps=cfg.warmup_steps, total_steps=cfg.max_steps, min_lr=cfg.min_lr,
                  decay=cfg.decay)
        if cfg.torch_schedule:
            self.schedule = torch_schedule(self.optimizer, **kw)
        else:
            self.schedule = Schedule(self.optimizer, **kw)
        # fp16 only: scale the loss so small gradients do not underflow (Micikevicius et al. 2018)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision == "fp16")
        self.ema = EMA(self.model, cfg.ema_decay, cfg.ema_warmup) if cfg.ema_decay > 0 else None
        self.step, self.tokens_seen, self.elapsed, self.best_val = 0, 0, 0.0, float("inf")
        self.max_steps = cfg.max_steps        # may shrink to fit --time-budget (see fit)
        self._calibrate_t0 = None             # elapsed seconds at step CALIBRATE_FROM
        self._cpu0 = time.process_time()      # CPU seconds of this process (all threads) since the run started
        self.skipped, self.bad_in_a_row = 0, 0
        if state:
            self._load_state(state)

        # --- wrappers for the training forward only
        self.train_model = torch.compile(self.model) if cfg.compile else self.model
        if self.world > 1:
            self.train_model = torch.nn.parallel.DistributedDataParallel(
                self.train_model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.peak, self.peak_source = peak_flops(self.device) if self.is_main else (float("nan"), "")
        if not resume:
            self._write_log({"kind": "info", "step": 0, "params": self.model.num_params(),
                             "train_pairs": len(self.train_set), "val_pairs": len(splits["val"]),
                             "batches_per_epoch": len(self.sampler.epoch_batches(0)), "device": str(self.device),
                             "precision": self.precision, "world_size": self.world,
                             "peak_flops": self.peak, "peak_source": self.peak_source})
        self.log(f"model: {self.model.num_params() / 1e6:.2f}M parameters, vocab {model_cfg.vocab_size}; "
                 f"device {self.device} x{self.world}, {self.precision}; "
                 f"batch {cfg.batch_tokens} tokens x {cfg.grad_accum} micro x {self.world} processes; "
                 f"peak {self.peak / 1e12:.2f} TFLOP/s ({self.peak_source})")

    # ------------------------------------------------------------------ tokenizer
    def _tokenizer(self, state) -> BPETokenizer:
        path = self.out / ckpt.TOKENIZER_FILE
        if state is not None:
            return BPETokenizer.load(path) if path.is_file() else ckpt._load_tokenizer(self.out, state)
        if self.is_main:  # trained on the training split only, so validation text never shapes the vocabulary
            t0 = time.perf_counter()
            tok = BPETokenizer.train((q + " " + a for q, a in self.splits["train"]), self.cfg.vocab_size)
            ckpt._save_tokenizer(tok, self.out)
            self.log(f"tokenizer: {tok.vocab_size} tokens, trained in {time.perf_counter() - t0:.1f} s")
        if self.world > 1:
            dist.barrier()                     # the other ranks read the file rank 0 wrote
        return BPETokenizer.load(path)

    # ------------------------------------------------------------------ data stream
    def _next_batch(self) -> dict:
        """This rank's next micro-batch; the sampler remembers (epoch, position) for an exact resume."""
        while True:
            if self._batch_iter is None:
                self._batch_iter = iter(self.sampler)   # continues from sampler.position within its epoch
            try:
                indices = next(self._batch_iter)
            except StopIteration:                       # end of epoch: the sampler moved to the next one
                self._batch_iter = None
                continue
            batch = collate([self.train_set[i] for i in indices], self.tokenizer.pad_id)
            return {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    def _autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=torch.bfloat16 if self.precision == "bf16" else torch.float16)

    def _all_reduce(self, t: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            dist.all_reduce(t)
        return t

    # ------------------------------------------------------------------ one optimisation step
    def train_step(self) -> dict:
        """One optimiser step over grad_accum micro-batches per process. Returns a record for the log."""
        cfg, model = self.cfg, self.train_model
        model.train()
        micro = [self._next_batch() for _ in range(cfg.grad_accum)]

        # The loss is a mean over every real target token of the step, across micro-batches AND processes:
        # sum of token losses / total tokens. Dividing each micro-batch by its own count instead would
        # weight a token in a short batch more than one in a long batch.
        n_tokens = self._all_reduce(sum(b["tgt_out_ids"].ne(self.tokenizer.pad_id).sum() for b in micro))
        n_tokens = n_tokens.clamp(min=1).float()
        # subtle: DDP AVERAGES gradients over processes; multiplying by world cancels that average, so the
        # gradient is (sum over all tokens) / n_tokens however the tokens are split between processes.
        scale = self.world / n_tokens
        loss_total = torch.zeros((), device=self.device)
        for i, batch in enumerate(micro):
            # no gradient all-reduce until the last micro-batch (accumulate locally first)
            sync = (model.no_sync() if self.world > 1 and i < len(micro) - 1 else contextlib.nullcontext())
            with sync:
                with self._autocast():
                    logits = model(batch["src_ids"], batch["tgt_in_ids"])            # (B, T, V)
                loss_sum, _ = masked_cross_entropy(logits, batch["tgt_out_ids"], self.tokenizer.pad_id,
                                                   cfg.label_smoothing)       # float32 sum over real tokens
                self.scaler.scale(loss_sum * scale).backward()                # grads accumulate in .grad
            loss_total += loss_sum.detach()
        loss = (self._all_reduce(loss_total) / n_tokens).item()             # mean token loss of the step

        self.scaler.unscale_(self.optimizer)          # true gradients (no-op unless fp16)
        params = [p for p in self.model.parameters() if p.grad is not None]
        # clip_grad_norm_ returns the norm BEFORE clipping (Pascanu et al. 2013, gradient norm clipping)
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip if cfg.grad_clip > 0 else float("inf"))
        grad_norm = float(grad_norm)

        # NaN/Inf guard: a non-finite loss or gradient would poison the weights, the Adam moments and the
        # EMA for good. Apply nothing: no step, no schedule, no EMA; count it. (Every rank sees the same
        # all-reduced loss and the same synchronised gradients, so they all decide alike.)
        if not (math.isfinite(loss) and math.isfinite(grad_norm)):
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.update()                      # fp16: lower the loss scale after an overflow
            self.skipped += 1
            # subtle: with fp16 an overflowing gradient at a finite loss is the GradScaler's normal way to
            # find its scale; only a non-finite LOSS (or any non-finite step in fp32/bf16) counts as "bad".
            if not (self.precision == "fp16" and math.isfinite(loss)):
                self.bad_in_a_row += 1
            return {"kind": "skip", "step": self.step + 1, "loss": loss, "grad_norm": grad_norm,
                    "skipped": self.skipped, "bad_in_a_row": self.bad_in_a_row}

        self.scaler.step(self.optimizer)              # optimizer.step() (GradScaler skips it on inf in fp16)
        self.scaler.update()
        lr = self.optimizer.param_groups[0]["lr"]    # the rate this step used
        self.schedule.step()                          # the rate for the next step
        if self.ema is not None:
            self.ema.update(self.model)
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.bad_in_a_row = 0
        src_tokens = sum(b["src_ids"].ne(self.tokenizer.pad_id).sum() for b in micro)
        n_all = int(self._all_reduce(src_tokens.float()).item() + n_tokens.item())
        flops = sum(self.model.flops_per_token(b["src_ids"].shape[1], b["tgt_in_ids"].shape[1])
                    for b in micro) / len(micro) * n_all
        self.tokens_seen += n_all
        return {"kind": "train", "step": self.step, "loss": loss, "lr": lr, "grad_norm": grad_norm,
                "tokens": n_all, "flops": flops, "skipped": self.skipped}

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self) -> dict | None:
        """Validation loss, perplexity, token/top-5 accuracy, NLL per answer character, the conditioning gain
        (does the model read the question? minillm.metrics.mismatched_sources), and BLEU/chrF and the share of
        distinct answers among greedy answers, all with the EMA weights."""
        if self.val_set is None or not self.is_main:
            return None
        cfg = self.cfg
        ema = self.ema.applied(self.model) if self.ema is not None else contextlib.nullcontext()
        with ema:
            self.model.eval()
            def logits_fn(src_ids, tgt_in_ids):
                with self._autocast():
                    return self.model(src_ids, tgt_in_ids)                                # (B, T, V)
            record = {"kind": "eval", "step": self.step, "elapsed_s": self.elapsed,
                      "cpu_s": time.process_time() - self._cpu0,
                      **teacher_forced_record(logits_fn, self.val_set.items, self.tokenizer.pad_id,
                                              cfg.batch_tokens, self.device, self.val_chars)}
            n = min(cfg.eval_generate, len(self.val_set))
            if n > 0:
                # the first n validation pairs, always the same ones; sources exactly as in training
                # (question ids + <eos>), decoded greedily
                srcs = [self.val_set[i][0] for i in range(n)]
                with torch.inference_mode(), self._autocast():
                    results = decode_ids(self.model, srcs, GenerationConfig(
                        strategy="greedy", max_new_tokens=cfg.eval_max_new_tokens))
                hyps = [self.tokenizer.decode(ids) for ids, _ in results]
                record.update(answers_record(hyps, [a for _, a in self.val_set.pairs[:n]]))
                for (q, a), h in list(zip(self.val_set.pairs, hyps))[:cfg.print_samples]:
                    self.log(f"  Q: {q}\n  reference: {a}\n  model:     {h}")
        self.model.train()
        return record

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        return {"step": self.step, "max_steps": self.max_steps, "model_config": dataclasses.asdict(self.model.cfg),
                "train_config": dataclasses.asdict(self.cfg), "model": ckpt.model_state(self.model),
                "optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict(),
                "scaler": self.scaler.state_dict(), "ema": self.ema.state_dict() if self.ema else None,
                "rng": ckpt.rng_state(), "sampler": self.sampler.state_dict(),
                "tokenizer": (self.out / ckpt.TOKENIZER_FILE).read_text(encoding="utf-8"),
                "tokens_seen": self.tokens_seen, "elapsed": self.elapsed, "best_val": self.best_val,
                "best_by": self._best_by(),
                "skipped": self.skipped}

    def _load_state(self, s: dict):
        self.model.load_state_dict(s["model"])
        self.optimizer.load_state_dict(s["optimizer"])
        self.schedule.load_state_dict(s["schedule"])
        self.scaler.load_state_dict(s["scaler"])
        if self.ema is not None and s["ema"] is not None:
            self.ema.load_state_dict(s["ema"])
        self.sampler.load_state_dict(s["sampler"])
        self.step, self.tokens_seen, self.elapsed = s["step"], s["tokens_seen"], s["elapsed"]
        self.max_steps = s["max_steps"]
        if s["train_config"]["max_steps"] != self.cfg.max_steps and isinstance(self.schedule, Schedule):
            # --max-steps given again on --resume: extend (or shorten) the run; the decay is re-spread over it
            self.max_steps = self.schedule.kw["total_steps"] = self.cfg.max_steps
            self.schedule.load_state_dict(self.schedule.state_dict())   # re-applies the lr for this step
        self.best_val, self.skipped = s["best_val"], s["skipped"]
        if s.get("best_by") != self._best_by():
            # subtle: best_val is a chrF (negated) or an NLL; comparing one with the other would keep or
            # replace model.pt for no reason. A run resumed with another --select-by starts a new best.
            self.log(f"model.pt selection changed to {self._best_by()} on resume: the next evaluation becomes the best")
            self.best_val = float("inf")
        ckpt.set_rng_state(s["rng"])
        if self.world > 1:
            # subtle: only rank 0's generators were saved; other ranks get a fresh seed that depends on rank
            # and step, so dropout masks still differ between ranks (multi-process resume is exact in the
            # data order and the weights, not in every dropout mask).
            torch.manual_seed(self.cfg.seed + self.rank + 1000 * self.step)
        # drop log records past the resumed step (the killed run got further than its last checkpoint)
        if self.is_main:
            self._truncate_log(self.step)

    def save(self):
        if self.is_main:
            path = ckpt.save_state(self.out, self.state_dict(), self.cfg.keep_last)
            self.log(f"saved {path}")
        if self.world > 1:
            dist.barrier()

    def _best_by(self) -> str:
        return "chrf" if self.cfg.select_by == "chrf" and self.cfg.eval_generate > 0 else "nll"

    def _selection_score(self, record: dict) -> float:
        """Lower is better. By default the validation answers' greedy chrF decides which weights become
        model.pt: on a small data set the validation NLL is often best early, while the answers keep improving
        long after (make train: NLL best at step 200 with 38 % distinct answers, chrF best at step 500 with
        100 %; bench/answers.py then found the training questions answered with chrF 99.9)."""
        if self._best_by() == "chrf" and "chrf" in record:
            return -record["chrf"]
        return record["nll"]

    def save_best(self, record: dict):
        if self.is_main:
            ckpt.save_model(self.out, self.model, self.tokenizer, ema=self.ema, step=self.step,
                            val_loss=record.get("nll"), chrf=record.get("chrf"), train_config=dataclasses.asdict(self.cfg))

    # ------------------------------------------------------------------ logging
    def _write_log(self, record: dict):
        if self.is_main:
            with open(self.out / "log.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    def _truncate_log(self, step: int):
        path = self.out / "log.jsonl"
        if not path.is_file():
            return
        kept = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:      # a line cut by the kill
                continue
            if rec.get("step", 0) <= step:
                kept.append(line)
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(k + "\n" for k in kept), encoding="utf-8")
        os.replace(tmp, path)

    def _progress(self, rec: dict, step_s: float):
        cfg = self.cfg
        tok_s = rec["tokens"] / step_s
        mfu = rec["flops"] / step_s / self.peak
        left = (self.max_steps - self.step) * step_s
        if cfg.time_budget > 0:
            left = min(left, cfg.time_budget * 60 - self.elapsed)
        rec.update(tokens_per_s=tok_s, mfu=mfu, elapsed_s=self.elapsed)
        line = (f"step {self.step:6d}/{self.max_steps} | loss {rec['loss']:.4f} | lr {rec['lr']:.2e} | "
                f"{tok_s:8.0f} tok/s | MFU {100 * mfu:5.2f}% | skipped {self.skipped} | "
                f"ETA {int(left // 60)}m{int(left % 60):02d}s")
        if self.is_main:  # one updating line on a terminal, plain lines otherwise
            if sys.stdout.isatty():
                print("\r" + line, end="", flush=True)
            elif self.step % cfg.log_every == 0 or self.step == 1:
                self.log(line)

    # ------------------------------------------------------------------ the run
    CALIBRATE_FROM, CALIBRATE_AT = 5, 15   # steps 6..15 are timed (the first ones pay for warm-up)

    def _fit_schedule_to_budget(self):
        """With --time-budget, shrink max_steps once to the steps that fit, so that the learning rate has
        decayed to min_lr when time runs out (a run cut off at its peak lr ends with noisy weights).
        Decided once, at step CALIBRATE_AT, and saved with the state: a resumed run keeps the decision."""
        per_step = (self.elapsed - self._calibrate_t0) / (self.CALIBRATE_AT - self.CALIBRATE_FROM)
        fits = self.step + int(0.9 * (self.cfg.time_budget * 60 - self.elapsed) / per_step)  # 10% for evaluations
        fits = max(fits, self.cfg.warmup_steps + 1, self.step + 1)
        if fits >= self.max_steps:
            return
        if isinstance(self.schedule, Schedule):
            self.schedule.kw["total_steps"] = fits
            self.log(f"time budget {self.cfg.time_budget} min at {per_step:.2f} s/step: max_steps "
                     f"{self.max_steps} -> {fits}, the schedule decays to min_lr by then")
            self.max_steps = fits
        else:
            self.log("time budget: PyTorch's schedulers cannot be shortened mid-run; the schedule follows max_steps")

    def fit(self) -> dict | None:
        """Train to max_steps (or the time budget), evaluating, checkpointing and logging on the way."""
        cfg, last_eval = self.cfg, None
        start = time.perf_counter() - self.elapsed
        while self.step < self.max_steps:
            t0 = time.perf_counter()
            rec = self.train_step()
            self.elapsed = time.perf_counter() - start
            if rec["kind"] == "skip":
                self.log(f"\nwarning: non-finite loss/gradient at step {rec['step']} (loss {rec['loss']}, "
                         f"grad norm {rec['grad_norm']}); step skipped, nothing applied "
                         f"({rec['bad_in_a_row']} in a row, {rec['skipped']} in total)")
                self._write_log(rec)
                if self.bad_in_a_row >= cfg.max_bad_steps:
                    self.save()   # the weights are still those of the last good step
                    raise TrainingAborted(
                        f"{self.bad_in_a_row} non-finite steps in a row after step {self.step}: training stopped. "
                        f"The last good state (step {self.step}) is saved in {self.out}. Lower --lr, keep "
                        f"--grad-clip on, use --precision bf16 rather than fp16, or check the data.")
                continue
            self._progress(rec, time.perf_counter() - t0)
            out_of_time = cfg.time_budget > 0 and self.elapsed >= cfg.time_budget * 60
            if self.world > 1:   # every rank must stop at the same step
                flag = torch.tensor([float(out_of_time)], device=self.device)
                out_of_time = bool(self._all_reduce(flag).item() > 0)
            if self.step == self.CALIBRATE_FROM:
                self._calibrate_t0 = self.elapsed
            if self.step == self.CALIBRATE_AT and cfg.time_budget > 0 and self._calibrate_t0 is not None:
                self._fit_schedule_to_budget()
            last = self.step == self.max_steps or out_of_time
            if self.step % cfg.log_every == 0 or self.step == 1 or last:
                self._write_log(rec)
            if self.step % cfg.eval_every == 0 or last:
                if self.is_main and sys.stdout.isatty():
                    print()
                last_eval = self.evaluate()
                if last_eval is not None:
                    self.log(f"eval step {self.step}: val loss {last_eval['nll']:.4f}, ppl "
                             f"{last_eval['perplexity']:.2f}, token acc {last_eval['accuracy']:.3f}, top-5 "
                             f"{last_eval['top5_accuracy']:.3f}"
                             + (f", gain {last_eval['cond_gain']:.3f}" if "cond_gain" in last_eval else "")
                             + (f", BLEU {last_eval['bleu']:.2f}, chrF {last_eval['chrf']:.2f}, distinct "
                                f"{last_eval['distinct']:.2f}" if "bleu" in last_eval else ""))
                    self._write_log(last_eval)
                    if self._selection_score(last_eval) < self.best_val:
                        self.best_val = self._selection_score(last_eval)
                        self.save_best(last_eval)
            if self.step % cfg.save_every == 0 or last:
                self.save()
            if out_of_time:
                self.log(f"time budget of {cfg.time_budget} min reached at step {self.step}")
                break
        if self.val_set is None:   # nothing to select on: the final weights are the model
            self.save_best({})
        chosen = ("the final weights, no validation pairs" if self.val_set is None else
                  "best by greedy chrF on validation" if cfg.select_by == "chrf" and cfg.eval_generate > 0 else
                  "best by validation loss")
        self.log(f"checkpoint: {self.out.resolve()} (model.pt = {chosen}"
                 f"{', EMA weights' if self.ema is not None else ''}; load with minillm.checkpoint.load)")
        return last_eval


def resume_config(out, overrides: dict) -> TrainConfig:
    """The TrainConfig saved in the newest readable state of run directory `out`, with `overrides` (the flags
    given on the command line, e.g. a larger --max-steps) on top."""
    state = ckpt.latest_state(out, log=lambda *a: None)
    if state is None:
        raise FileNotFoundError(f"--resume: no readable state-*.pt checkpoint in {out}")
    return TrainConfig(**{**state["train_config"], **overrides})
