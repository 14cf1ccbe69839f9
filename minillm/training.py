"""Training: the configuration of a run, and the Trainer that takes one optimisation step.

Read `Trainer.train_step` first: it is the whole algorithm, top to bottom, in the order it runs:

    autocast forward over the micro-batches -> loss normalised by the total real-token count -> backward
    -> unscale -> clip (which measures the gradient norm) -> NaN/Inf guard on the loss and that norm
    -> optimizer step -> schedule step -> EMA update -> zero_grad

`Trainer.evaluate` scores the model on the validation pairs (minillm.evaluation). Everything around them --
building a run from a config, resuming, checkpoints, the log, the time budget, progress lines -- is
machinery (minillm.machinery.run), which a learner may skip.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
import torch.distributed as dist

from minillm.batching import TokenBatchSampler, collate
from minillm.data import printable
from minillm.evaluation import answer_chars, answers_record, teacher_forced_record
from minillm.generation import GenerationConfig, decode_ids, eval_mode
from minillm.losses import masked_cross_entropy
from minillm.optim import EMA, Schedule, make_optimizer, torch_schedule
from minillm.tokenizer import FIRST_MERGE_ID
from minillm.transformer import MODEL_PRESETS


# fields with a fixed set of values (train.py turns these into argparse choices)
CHOICES = {"model": tuple(MODEL_PRESETS), "decay": ("cosine", "linear"), "device": ("auto", "cpu", "cuda"),
           "precision": ("auto", "fp32", "bf16", "fp16"), "select_by": ("chrf", "nll")}


@dataclass
class TrainConfig:
    """Everything a run needs besides the model's own sizes. Defaults are the `small` preset (CPU)."""
    # --- data
    data: str = "data/sample.json"     # JSON list / JSONL / CSV of question-answer pairs
    out: str = "runs/small"            # run directory: tokenizer, log.jsonl, model.pt, state-*.pt
    val_fraction: float = 0.1          # share of pairs (by hash of the question) held out for evaluation
    vocab_size: int = 2000             # BPE vocabulary incl. 3 special tokens: 2000 suits the 78 KB sample, ~8000 a few MB
    max_src_len: int = 128             # tokens: the question + <eos>, then the passages retrieved; never cuts the question
    max_tgt_len: int = 192             # tokens; longer answers are cut without <eos>
    # --- retrieval: passages the model reads after the question (minillm.corpus, minillm.retrieval)
    corpus: str = "data/anayasa.json"  # articles file the model reads (JSON list of madde/baslik/metin/mulga); "" = none
    retrieve_articles: int = 1         # article passages per question (an article the question names comes first)
    retrieve_pairs: int = 0            # training answers per question (found by their questions); 0 = none
    window_words: int = 40             # words per article passage; a longer article is cut into overlapping windows
    window_stride: int = 30            # words from one window's start to the next's (overlap: window_words - stride)
    # --- model (None = the preset's value)
    model: str = "small"               # ModelConfig preset: "small" (~8M params, CPU) or "base" (~100M, GPU)
    d_model: int | None = None         # C, residual width
    n_heads: int | None = None         # H, attention heads
    n_layers: int | None = None        # encoder layers = decoder layers
    d_ff: int | None = None            # feed-forward hidden width
    dropout: float | None = None       # probability; 0.05 in the small preset, 0.1 in base (Vaswani et al. 2017, §5.4)
    copy: bool | None = None           # pointer-generator head (minillm.copying); None = on when the run reads a corpus
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
    time_budget: float = 0.0           # minutes (0 = none); max_steps is re-fitted to the time left as the run goes
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
        """Refuse a value that cannot work, naming the field, its flag and what it accepts."""
        def need(name: str, ok: bool, expected: str) -> None:
            if not ok:
                raise ValueError(f"--{name.replace('_', '-')} must be {expected}, got {getattr(self, name)!r}")

        def number(name: str) -> float:   # a real number; a NaN or an infinity is refused
            value = getattr(self, name)
            need(name, isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
                 "a finite number")
            return value
        for name, allowed in CHOICES.items():
            need(name, getattr(self, name) in allowed, f"one of {allowed}")
        for name in ("max_steps", "batch_tokens", "eval_every", "log_every", "save_every", "keep_last",
                     "max_bad_steps"):
            need(name, getattr(self, name) >= 1, ">= 1")
        need("grad_accum", 1 <= self.grad_accum <= 4096, "in [1, 4096] (a step holds its micro-batches in memory)")
        need("vocab_size", self.vocab_size >= FIRST_MERGE_ID, f">= {FIRST_MERGE_ID} (256 bytes + "
             f"{FIRST_MERGE_ID - 256} special tokens, before any merge)")
        need("max_src_len", self.max_src_len >= 2, ">= 2 (a token and <eos>)")
        need("max_tgt_len", self.max_tgt_len >= 2, ">= 2 (<bos> and a token)")
        for name in ("retrieve_articles", "retrieve_pairs", "eval_generate", "print_samples"):
            need(name, getattr(self, name) >= 0, ">= 0 (0 = none)")
        need("window_words", self.window_words >= 1, ">= 1")
        need("window_stride", 1 <= self.window_stride <= self.window_words,
             f"in [1, window_words = {self.window_words}] (windows must cover every word)")
        # above 1 AdamW moves every weight by ~lr per step: the run diverges at once
        need("lr", 0 < number("lr") <= 1, "in (0, 1]")
        need("min_lr", 0 <= number("min_lr") <= self.lr, f"in [0, lr = {self.lr}]")
        for name in ("beta1", "beta2", "label_smoothing", "ema_decay", "val_fraction"):
            need(name, 0 <= number(name) < 1, "in [0, 1)")
        if self.dropout is not None:
            need("dropout", 0 <= number("dropout") < 1, "in [0, 1)")
        need("threads", self.threads >= 0, ">= 0 (0 = PyTorch's default)")
        need("seed", 0 <= self.seed < 2 ** 63, "in [0, 2**63 - 1] (as a generation seed)")
        positions = max(self.max_src_len, self.max_tgt_len)   # the model's; a longer answer fails to decode
        need("eval_max_new_tokens", 1 <= self.eval_max_new_tokens <= positions,
             f"in [1, {positions}] (the model's positions: the larger of --max-src-len and --max-tgt-len)")
        for name in ("weight_decay", "grad_clip", "time_budget"):
            need(name, number(name) >= 0, ">= 0")
        need("warmup_steps", 0 <= self.warmup_steps < self.max_steps,
             f"in [0, max_steps = {self.max_steps}) (the warmup must end before the run does)")

    @classmethod
    def preset(cls, name: str, **overrides) -> "TrainConfig":
        """`small`: the CPU defaults above. `base`: a ~100M model on one GPU, bf16, bigger batches."""
        if name not in TRAIN_PRESETS:
            raise ValueError(f"unknown training preset {name!r}; expected one of {sorted(TRAIN_PRESETS)}")
        return cls(**{**TRAIN_PRESETS[name], **overrides})


# train.py --config NAME: a TrainConfig preset, which names the ModelConfig preset of the same name.
TRAIN_PRESETS = {"small": {},
                 "base": dict(model="base", out="runs/base", vocab_size=8000, max_src_len=192, retrieve_pairs=1,
                              batch_tokens=16384, lr=6e-4, min_lr=6e-5, warmup_steps=500, max_steps=20000,
                              ema_decay=0.999, eval_every=1000, save_every=1000, eval_generate=64, log_every=50)}


class Trainer:
    """The learning state of one run: the model, optimiser, schedule, loss scaler, EMA and the batch stream.

    model: the plain Seq2Seq (EMA, evaluation and checkpoints use it); train_model: what the forward pass
    runs, the same module or a torch.compile / DistributedDataParallel wrapper of it. rank and world_size:
    this process and the number of processes (1 without torchrun); every process holds a Trainer.
    """

    def __init__(self, cfg: TrainConfig, model, tokenizer, train_set, val_set=None, *, device=None,
                 precision: str = "fp32", rank: int = 0, world_size: int = 1, train_model=None, log=print):
        self.cfg, self.model, self.tokenizer = cfg, model, tokenizer
        self.train_set, self.val_set = train_set, val_set
        self.device = device or torch.device("cpu")
        self.precision, self.rank, self.world = precision, rank, world_size
        self.train_model = model if train_model is None else train_model   # subtle: `or` would call len()
        self.log = log
        self.val_chars = answer_chars(val_set.items, tokenizer) if val_set else 0
        self.sampler = TokenBatchSampler(train_set.lengths, cfg.batch_tokens, seed=cfg.seed, rank=rank,
                                         world_size=world_size)
        self._batch_iter = None
        self.optimizer = make_optimizer(model, cfg.lr, cfg.weight_decay, (cfg.beta1, cfg.beta2),
                                        fused=True if self.device.type == "cuda" else None)
        schedule = torch_schedule if cfg.torch_schedule else Schedule
        self.schedule = schedule(self.optimizer, max_lr=cfg.lr, warmup_steps=cfg.warmup_steps,
                                 total_steps=cfg.max_steps, min_lr=cfg.min_lr, decay=cfg.decay)
        # fp16 only: scale the loss so small gradients do not underflow (Micikevicius et al. 2018)
        self.scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
        self.ema = EMA(model, cfg.ema_decay, cfg.ema_warmup) if cfg.ema_decay > 0 else None
        self.step, self.tokens_seen, self.skipped, self.bad_in_a_row = 0, 0, 0, 0

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

    def autocast(self):
        """bf16 or fp16 autocast on CUDA (matmuls in half precision, reductions in float32); nothing in fp32."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=torch.bfloat16 if self.precision == "bf16" else torch.float16)

    def all_reduce(self, t: torch.Tensor) -> torch.Tensor:
        """Sum `t` over the processes in place (nothing with one process)."""
        if self.world > 1:
            dist.all_reduce(t)
        return t

    # ------------------------------------------------------------------ one optimisation step
    def train_step(self) -> dict:
        """One optimiser step over grad_accum micro-batches per process: forward, masked loss, backward, clip,
        guard, step, EMA. Returns a record for the log."""
        self.train_model.train()
        micro = [self._next_batch() for _ in range(self.cfg.grad_accum)]
        # The loss is a mean over every real target token of the step, across micro-batches AND processes:
        # sum of token losses / total tokens. Dividing each micro-batch by its own count instead would
        # weight a token in a short batch more than one in a long batch.
        n_tokens = self.all_reduce(sum(b["tgt_out_ids"].ne(self.tokenizer.pad_id).sum() for b in micro))
        n_tokens = n_tokens.clamp(min=1).float()
        loss_sum = torch.zeros((), device=self.device)
        for i, batch in enumerate(micro):
            with self.sync_on_last(i, len(micro)):
                with self.autocast():
                    logits = self.train_model(batch["src_ids"], batch["tgt_in_ids"])    # (B, T, V)
                batch_loss, _ = masked_cross_entropy(logits, batch["tgt_out_ids"], self.tokenizer.pad_id,
                                                     self.cfg.label_smoothing)  # float32 sum over real tokens
                self.scaler.scale(batch_loss * self.world / n_tokens).backward()   # grads accumulate in .grad
            loss_sum += batch_loss.detach()
        loss = (self.all_reduce(loss_sum) / n_tokens).item()                  # mean token loss of the step
        grad_norm = self.clip_gradients()
        # NaN/Inf guard: a non-finite loss or gradient would poison the weights, the Adam moments and the
        # EMA for good, so nothing is applied (Trainer.skip_step).
        if not (math.isfinite(loss) and math.isfinite(grad_norm)):
            return self.skip_step(loss, grad_norm)
        self.scaler.step(self.optimizer)              # optimizer.step() (GradScaler skips it on inf in fp16)
        self.scaler.update()
        lr = self.optimizer.param_groups[0]["lr"]    # the rate this step used
        self.schedule.step()                          # the rate for the next step
        if self.ema is not None:
            self.ema.update(self.model)
        self.optimizer.zero_grad(set_to_none=True)
        self.step, self.bad_in_a_row = self.step + 1, 0
        return {"kind": "train", "step": self.step, "loss": loss, "lr": lr, "grad_norm": grad_norm,
                **self.count_tokens_and_flops(micro, n_tokens), "skipped": self.skipped}

    def sync_on_last(self, i: int, n: int):
        """DDP: no gradient all-reduce until the last of n micro-batches (accumulate locally first).
        subtle: DDP AVERAGES gradients over processes; train_step multiplies the loss by world to cancel that
        average, so the gradient is (sum over all tokens) / n_tokens however the tokens are split."""
        return self.train_model.no_sync() if self.world > 1 and i < n - 1 else contextlib.nullcontext()

    def clip_gradients(self) -> float:
        """Unscale (fp16; a no-op otherwise) and clip to cfg.grad_clip; the norm BEFORE clipping (Pascanu et al.
        2013)."""
        self.scaler.unscale_(self.optimizer)
        params = [p for p in self.model.parameters() if p.grad is not None]
        return float(torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip or float("inf")))

    def skip_step(self, loss: float, grad_norm: float) -> dict:
        """A step with a non-finite loss or gradient: no update, no schedule, no EMA; counted. (Every rank sees
        the same all-reduced loss and the same synchronised gradients, so they all decide alike.)
        subtle: with fp16 an overflowing gradient at a finite loss is the GradScaler's normal way to find its
        scale; only a non-finite LOSS (or any non-finite step in fp32/bf16) counts as "bad"."""
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.update()                          # fp16: lower the loss scale after an overflow
        self.skipped += 1
        if not (self.precision == "fp16" and math.isfinite(loss)):
            self.bad_in_a_row += 1
        return {"kind": "skip", "step": self.step + 1, "loss": loss, "grad_norm": grad_norm,
                "skipped": self.skipped, "bad_in_a_row": self.bad_in_a_row}

    def count_tokens_and_flops(self, micro: list[dict], n_tokens) -> dict:
        """The step's tokens (source and target, every process) and FLOPs, for throughput and MFU."""
        src_tokens = sum(b["src_ids"].ne(self.tokenizer.pad_id).sum() for b in micro)
        n_all = int(self.all_reduce(src_tokens.float()).item() + n_tokens.item())
        flops = sum(self.model.flops_per_token(b["src_ids"].shape[1], b["tgt_in_ids"].shape[1])
                    for b in micro) / len(micro) * n_all
        self.tokens_seen += n_all
        return {"tokens": n_all, "flops": flops}

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self) -> dict | None:
        """Validation loss, perplexity, token/top-5 accuracy, NLL per answer character, the conditioning gain
        (does the model read the question? minillm.metrics.mismatched_sources), and BLEU/chrF and the share of
        distinct answers among greedy answers, all with the EMA weights."""
        if self.val_set is None or self.rank != 0:
            return None
        cfg = self.cfg
        ema = self.ema.applied(self.model) if self.ema is not None else contextlib.nullcontext()
        with ema, eval_mode(self.model):
            def logits_fn(src_ids, tgt_in_ids):
                with self.autocast():
                    return self.model(src_ids, tgt_in_ids)                                # (B, T, V)
            record = {"kind": "eval", "step": self.step,
                      **teacher_forced_record(logits_fn, self.val_set.items, self.tokenizer.pad_id,
                                              cfg.batch_tokens, self.device, self.val_chars)}
            n = min(cfg.eval_generate, len(self.val_set))
            if n > 0:
                # the first n validation pairs, always the same ones; sources exactly as in training
                # (question ids + <eos>), decoded greedily
                srcs = [self.val_set[i][0] for i in range(n)]
                with torch.inference_mode(), self.autocast():
                    results = decode_ids(self.model, srcs, GenerationConfig(
                        strategy="greedy", max_new_tokens=cfg.eval_max_new_tokens))
                hyps = [self.tokenizer.decode(ids) for ids, _ in results]
                record.update(answers_record(hyps, [a for _, a in self.val_set.pairs[:n]]))
                for (q, a), h in list(zip(self.val_set.pairs, hyps))[:cfg.print_samples]:
                    self.log(printable(f"  Q: {q}\n  reference: {a}\n  model:     {h}"))
        return record

    @torch.no_grad()
    def weights_are_sound(self) -> str | None:
        """None when the weights can be saved as a good state; else what is wrong with them. Finite is not
        enough (a blown-up step can leave weights of 1e29 that are finite): the weights must also give a
        finite loss on a fixed batch of training pairs (eval mode: no dropout, no random number drawn)."""
        bad = [n for n, p in self.model.named_parameters() if not bool(torch.isfinite(p).all())]
        if bad:
            return f"{len(bad)} weight tensors hold NaN or inf (e.g. {bad[0]})"
        items = self.train_set.items[:8]
        batch = {k: v.to(self.device) for k, v in collate(items, self.tokenizer.pad_id).items()}
        with eval_mode(self.model), self.autocast():
            logits = self.model(batch["src_ids"], batch["tgt_in_ids"])                 # (B, T, V)
        loss_sum, n = masked_cross_entropy(logits, batch["tgt_out_ids"], self.tokenizer.pad_id)
        loss = float(loss_sum / n)
        return None if math.isfinite(loss) else f"they give a non-finite loss ({loss}) on training pairs"

    # ------------------------------------------------------------------ state, for checkpoints
    def state_dict(self) -> dict:
        """Everything that changes while training, as tensors and plain values (the weights: see run)."""
        return {"step": self.step, "optimizer": self.optimizer.state_dict(), "schedule": self.schedule.state_dict(),
                "scaler": self.scaler.state_dict(), "ema": self.ema.state_dict() if self.ema else None,
                "sampler": self.sampler.state_dict(), "tokens_seen": self.tokens_seen, "skipped": self.skipped}

    def load_state_dict(self, s: dict) -> None:
        self.optimizer.load_state_dict(s["optimizer"])
        self.schedule.load_state_dict(s["schedule"])
        self.scaler.load_state_dict(s["scaler"])
        if self.ema is not None and s["ema"] is not None:
            self.ema.load_state_dict(s["ema"])
        self.sampler.load_state_dict(s["sampler"])
        self.step, self.tokens_seen, self.skipped = s["step"], s["tokens_seen"], s["skipped"]
