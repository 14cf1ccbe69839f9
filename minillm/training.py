"""Training: the Trainer that takes one optimisation step (the run's settings: minillm.recipe).

Read `Trainer.train_step` first: it is the whole algorithm, top to bottom, in the order it runs:

    autocast forward over the micro-batches -> loss normalised by the total real-token count
    -> backward -> unscale -> clip (which measures the gradient norm) -> NaN/Inf guard on the
    loss and that norm -> optimizer step -> schedule step -> EMA update -> zero_grad

`Trainer.evaluate` scores the model on the validation pairs (minillm.evaluation). Everything around
them -- building a run from a config, resuming, checkpoints, the log, the time budget, progress
lines -- is machinery (minillm.machinery.run), which a learner may skip.
"""
from __future__ import annotations

import contextlib
import math

import torch
import torch.distributed as dist

from minillm.batching import TokenBatchSampler, collate
from minillm.data import printable
from minillm.evaluation import answer_chars, answers_record, teacher_forced_record
from minillm.generation import GenerationConfig, decode_ids, eval_mode
from minillm.losses import masked_cross_entropy
from minillm.optim import EMA, Schedule, make_optimizer, torch_schedule
from minillm.recipe import TrainConfig


class Trainer:
    """The learning state of one run: the model, optimiser, schedule, loss scaler, EMA and the
    batch stream.

    model: the plain Seq2Seq (EMA, evaluation and checkpoints use it); train_model: what the forward
    pass runs, the same module or a torch.compile / DistributedDataParallel wrapper of it. rank and
    world_size: this process's DDP rank and the number of processes (0 and 1 without torchrun);
    every process holds a Trainer.
    """

    def __init__(self, cfg: TrainConfig, model, tokenizer, train_set, val_set=None, *,
                 device=None, precision: str = "fp32", rank: int = 0, world_size: int = 1,
                 train_model=None, log=print):
        self.cfg = cfg
        self.model = model
        self.tokenizer = tokenizer
        self.train_set = train_set
        self.val_set = val_set
        self.device = device or torch.device("cpu")
        self.precision = precision
        self.rank = rank
        self.world = world_size
        # subtle: `train_model or model` would call len() on the module
        self.train_model = model if train_model is None else train_model
        self.log = log
        self.val_chars = answer_chars(val_set.items, tokenizer) if val_set else 0
        self.sampler = TokenBatchSampler(train_set.lengths, cfg.batch_tokens, seed=cfg.seed,
                                         rank=rank, world_size=world_size)
        self._batch_iter = None
        self.optimizer = make_optimizer(model, cfg.lr, cfg.weight_decay, (cfg.beta1, cfg.beta2),
                                        fused=True if self.device.type == "cuda" else None)
        schedule = torch_schedule if cfg.torch_schedule else Schedule
        self.schedule = schedule(self.optimizer, max_lr=cfg.lr, warmup_steps=cfg.warmup_steps,
                                 total_steps=cfg.max_steps, min_lr=cfg.min_lr, decay=cfg.decay)
        # fp16 only: scale the loss so small gradients do not underflow (Micikevicius et al. 2018)
        self.scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")
        self.ema = EMA(model, cfg.ema_decay, cfg.ema_warmup) if cfg.ema_decay > 0 else None
        self.step = 0
        self.tokens_seen = 0
        self.skipped = 0
        self.bad_in_a_row = 0

    # ------------------------------------------------------------------ data stream
    def _next_batch(self) -> dict:
        """This rank's next micro-batch; the sampler remembers (epoch, position) for an exact
        resume."""
        while True:
            if self._batch_iter is None:
                # continues from sampler.position within its epoch
                self._batch_iter = iter(self.sampler)
            try:
                indices = next(self._batch_iter)
            except StopIteration:   # end of epoch: the sampler moved to the next one
                self._batch_iter = None
                continue
            batch = collate([self.train_set[i] for i in indices], self.tokenizer.pad_id)
            return {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}

    def autocast(self):
        """bf16 or fp16 autocast on CUDA (matmuls in half precision, reductions in float32); nothing
        in fp32."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast("cuda", dtype=dtype)

    def all_reduce(self, t: torch.Tensor) -> torch.Tensor:
        """Sum `t` over the processes in place (nothing with one process)."""
        if self.world > 1:
            dist.all_reduce(t)
        return t

    # ------------------------------------------------------------------ one optimisation step
    def train_step(self) -> dict:
        """One optimiser step over grad_accum micro-batches per process: forward, masked loss,
        backward, clip, guard, step, EMA. Returns a record for the log."""
        self.train_model.train()
        micro = [self._next_batch() for _ in range(self.cfg.grad_accum)]
        # The loss is a mean over every real target token of the step, across micro-batches AND
        # processes: sum of token losses / total tokens. Dividing each micro-batch by its own count
        # instead would weight a token in a short batch more than one in a long batch.
        n_tokens = self.all_reduce(
            sum(b["tgt_out_ids"].ne(self.tokenizer.pad_id).sum() for b in micro))
        n_tokens = n_tokens.clamp(min=1).float()
        loss_sum = torch.zeros((), device=self.device)
        for i, batch in enumerate(micro):
            with self.sync_on_last(i, len(micro)):
                with self.autocast():
                    logits = self.train_model(batch["src_ids"], batch["tgt_in_ids"])  # (B, T, V)
                # float32 sum over real tokens
                batch_loss, _ = masked_cross_entropy(
                    logits, batch["tgt_out_ids"], self.tokenizer.pad_id, self.cfg.label_smoothing)
                # grads accumulate in .grad
                self.scaler.scale(batch_loss * self.world / n_tokens).backward()
            loss_sum += batch_loss.detach()
        loss = (self.all_reduce(loss_sum) / n_tokens).item()   # mean token loss of the step
        grad_norm = self.clip_gradients()
        # NaN/Inf guard: a non-finite loss or gradient would poison the weights, the Adam moments
        # and the EMA for good, so nothing is applied (Trainer.skip_step).
        if not (math.isfinite(loss) and math.isfinite(grad_norm)):
            return self.skip_step(loss, grad_norm)
        self.scaler.step(self.optimizer)   # optimizer.step() (GradScaler skips it on inf in fp16)
        self.scaler.update()
        lr = self.optimizer.param_groups[0]["lr"]   # the rate this step used
        self.schedule.step()                        # the rate for the next step
        if self.ema is not None:
            self.ema.update(self.model)
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.bad_in_a_row = 0
        return {"kind": "train", "step": self.step, "loss": loss, "lr": lr, "grad_norm": grad_norm,
                **self.count_tokens_and_flops(micro, n_tokens), "skipped": self.skipped}

    def sync_on_last(self, i: int, n: int):
        """DDP: no gradient all-reduce until the last of n micro-batches (accumulate locally first).
        subtle: DDP AVERAGES gradients over processes; train_step multiplies the loss by world to
        cancel that average, so the gradient is (sum over all tokens) / n_tokens however the tokens
        are split."""
        if self.world > 1 and i < n - 1:
            return self.train_model.no_sync()
        return contextlib.nullcontext()

    def clip_gradients(self) -> float:
        """Unscale (fp16; a no-op otherwise) and clip to cfg.grad_clip; the norm BEFORE clipping
        (Pascanu et al. 2013)."""
        self.scaler.unscale_(self.optimizer)
        params = [p for p in self.model.parameters() if p.grad is not None]
        return float(torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip or float("inf")))

    def skip_step(self, loss: float, grad_norm: float) -> dict:
        """A step with a non-finite loss or gradient: no update, no schedule, no EMA; counted.
        (Every rank sees the same all-reduced loss and the same synchronised gradients, so they all
        decide alike.)
        subtle: with fp16 an overflowing gradient at a finite loss is the GradScaler's normal way to
        find its scale; only a non-finite LOSS (or any non-finite step in fp32/bf16) counts as
        "bad"."""
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.update()                          # fp16: lower the loss scale after an overflow
        self.skipped += 1
        if not (self.precision == "fp16" and math.isfinite(loss)):
            self.bad_in_a_row += 1
        return {"kind": "skip", "step": self.step + 1, "loss": loss, "grad_norm": grad_norm,
                "skipped": self.skipped, "bad_in_a_row": self.bad_in_a_row}

    def count_tokens_and_flops(self, micro: list[dict], n_tokens) -> dict:
        """The step's tokens (source and target, every process) and FLOPs, for throughput and
        MFU."""
        src_tokens = sum(b["src_ids"].ne(self.tokenizer.pad_id).sum() for b in micro)
        n_all = int(self.all_reduce(src_tokens.float()).item() + n_tokens.item())
        flops = sum(self.model.flops_per_token(b["src_ids"].shape[1], b["tgt_in_ids"].shape[1])
                    for b in micro) / len(micro) * n_all
        self.tokens_seen += n_all
        return {"tokens": n_all, "flops": flops}

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self) -> dict | None:
        """Validation loss, perplexity, token/top-5 accuracy, NLL per answer character, the
        conditioning gain (does the model read the question? minillm.metrics.mismatched_sources),
        and BLEU/chrF and the share of distinct answers among greedy answers, all with the EMA
        weights."""
        if self.val_set is None or self.rank != 0:
            return None
        cfg = self.cfg
        ema = self.ema.applied(self.model) if self.ema is not None else contextlib.nullcontext()
        with ema, eval_mode(self.model):
            def logits_fn(src_ids, tgt_in_ids):
                with self.autocast():
                    return self.model(src_ids, tgt_in_ids)  # (B, T, V)
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
        """None when the weights can be saved as a good state; else what is wrong with them. Finite
        is not enough (a blown-up step can leave weights of 1e29 that are finite): the weights must
        also give a finite loss on a fixed batch of training pairs (eval mode: no dropout, no random
        number drawn)."""
        bad = [n for n, p in self.model.named_parameters() if not bool(torch.isfinite(p).all())]
        if bad:
            return f"{len(bad)} weight tensors hold NaN or inf (e.g. {bad[0]})"
        items = self.train_set.items[:8]
        batch = {k: v.to(self.device) for k, v in collate(items, self.tokenizer.pad_id).items()}
        with eval_mode(self.model), self.autocast():
            logits = self.model(batch["src_ids"], batch["tgt_in_ids"])                 # (B, T, V)
        loss_sum, n = masked_cross_entropy(logits, batch["tgt_out_ids"], self.tokenizer.pad_id)
        loss = float(loss_sum / n)
        if math.isfinite(loss):
            return None
        return f"they give a non-finite loss ({loss}) on training pairs"

    # ------------------------------------------------------------------ state, for checkpoints
    def state_dict(self) -> dict:
        """Everything that changes while training, as tensors and plain values (the weights: see
        run)."""
        return {"step": self.step, "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict(), "scaler": self.scaler.state_dict(),
                "ema": self.ema.state_dict() if self.ema else None,
                "sampler": self.sampler.state_dict(), "tokens_seen": self.tokens_seen,
                "skipped": self.skipped}

    def load_state_dict(self, s: dict) -> None:
        self.optimizer.load_state_dict(s["optimizer"])
        self.schedule.load_state_dict(s["schedule"])
        self.scaler.load_state_dict(s["scaler"])
        if self.ema is not None and s["ema"] is not None:
            self.ema.load_state_dict(s["ema"])
        self.sampler.load_state_dict(s["sampler"])
        self.step = s["step"]
        self.tokens_seen = s["tokens_seen"]
        self.skipped = s["skipped"]
