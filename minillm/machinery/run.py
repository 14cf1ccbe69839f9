"""A training run from a TrainConfig: set-up, resume, the loop with evaluation, checkpoints, log and progress.

    run = start_run(TrainConfig(data="data/sample.json", out="runs/x"))   # or resume=True
    run.fit()                                                               # model.pt = the best evaluation

`start_run` reads top to bottom in the order things are built: processes and device -> run directory ->
data -> tokenizer -> datasets -> model -> Trainer (optimiser, schedule, EMA) -> the saved state on resume.
The algorithm itself is minillm.training.Trainer.train_step; this module only drives it.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch
import torch.distributed as dist

from minillm.batching import Seq2SeqDataset
from minillm.data import clean_pairs, split_pairs
from minillm.model import ModelConfig, Seq2Seq
from minillm.optim import Schedule
from minillm.tokenizer import BPETokenizer
from minillm.training import TrainConfig, Trainer
from minillm.machinery import checkpoint as ckpt
from minillm.machinery import corpusfile, runlog
from minillm.machinery.datafiles import load_pairs
from minillm.machinery.device import peak_flops, resolve_device, resolve_precision, setup_distributed
from minillm.machinery.progress import Budget, Progress, choose_threads
from minillm.machinery.rundir import RunDirectory


class TrainingAborted(RuntimeError):
    """Too many non-finite steps in a row; the last good state has been saved."""


def start_run(cfg: TrainConfig, resume: bool = False, log=print) -> "Run":
    """Build everything a run needs, in order, and return it ready to fit(). Everything that can be checked
    without writing is checked first; a fresh run that still fails removes what it wrote."""
    # --- processes and device
    rank, world, local_rank = setup_distributed()
    log = (lambda *a, **k: None) if rank != 0 else log
    device = resolve_device(cfg.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", local_rank)
    precision = resolve_precision(cfg.precision, device)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)   # subtle: oversubscribed cores make OpenMP threads wait on each other
    run_dir = RunDirectory(cfg.out, resume)  # refuses to overwrite a run; nothing written yet
    # --- data: load, clean, split by a hash of the question (the same split on every rank)
    pairs, report = clean_pairs(load_pairs(cfg.data))
    splits = split_pairs(pairs, cfg.val_fraction, 0.0)
    log(f"data: {cfg.data}: {report.pairs_out} pairs after cleaning ({report}); "
        f"train {len(splits['train'])}, val {len(splits['val'])}")
    if not splits["train"]:
        raise ValueError(f"{cfg.data}: no training pairs left after the split ({report.pairs_out} pairs, "
                         f"--val-fraction {cfg.val_fraction}); give more pairs or lower the fraction")
    if not splits["val"]:
        # Documented fallback for a tiny file: train anyway, but say that nothing will be evaluated.
        log(f"warning: {cfg.data}: no validation pairs ({report.pairs_out} pairs, --val-fraction "
            f"{cfg.val_fraction}); training without evaluation, model.pt will hold the final weights")
    articles = corpusfile.read_articles(cfg.corpus) if corpusfile.uses_corpus(cfg) else None   # checked first
    sizes = {k: v for k, v in dict(d_model=cfg.d_model, n_heads=cfg.n_heads, n_encoder_layers=cfg.n_layers,
                                   n_decoder_layers=cfg.n_layers, d_ff=cfg.d_ff, dropout=cfg.dropout).items()
             if v is not None}
    sizes["copy"] = corpusfile.uses_corpus(cfg) if cfg.copy is None else cfg.copy
    try:                                         # the sizes are checked before anything is written
        ModelConfig.preset(cfg.model, vocab_size=cfg.vocab_size, max_len=max(cfg.max_src_len, cfg.max_tgt_len),
                           max_src_len=cfg.max_src_len, **sizes)
    except ValueError as e:
        raise ValueError(f"the model sizes (--config {cfg.model}, --d-model, --n-heads, --n-layers, --d-ff, "
                         f"--dropout) do not fit: {e}") from None
    # --- the run directory: created and locked; from here a failing fresh run removes what it wrote
    if rank == 0:
        run_dir.acquire(log)
    try:
        return _build(cfg, resume, log, run_dir, splits, sizes, rank, world, device, precision, articles)
    except BaseException:
        run_dir.discard() if not resume else run_dir.release()
        raise


def _build(cfg, resume, log, run_dir, splits, sizes, rank, world, device, precision, articles) -> "Run":
    out = run_dir.path
    state = ckpt.latest_state(out, map_location="cpu", log=log) if resume else None
    if state is not None:
        log(f"resuming from {state['path']} (step {state['step']})")
    retriever, retrieval = corpusfile.run_retriever(cfg, out, splits, articles, state, rank, log)
    # --- tokenizer: trained on the training split only, so validation text never shapes the vocabulary
    if state is not None:
        tokenizer = ckpt.load_tokenizer(out, state, log)
    else:
        if rank == 0:
            t0 = time.perf_counter()
            # the passages are text the model reads too: the tokenizer learns their words (never validation text)
            law_text = [p.text for p in retriever.law] if retriever is not None else []
            trained = BPETokenizer.train([q + " " + a for q, a in splits["train"]] + law_text, cfg.vocab_size)
            ckpt.save_tokenizer(trained, out)
            log(f"tokenizer: {trained.vocab_size} tokens, trained in {time.perf_counter() - t0:.1f} s")
        if world > 1:
            dist.barrier()                     # the other ranks read the file rank 0 wrote
        tokenizer = BPETokenizer.load(out / ckpt.TOKENIZER_FILE)
    # --- datasets
    # own_pairs: a training pair never reads its own answer (minillm.retrieval, LEAKAGE)
    train_set = Seq2SeqDataset(splits["train"], tokenizer, cfg.max_src_len, cfg.max_tgt_len, retriever,
                               own_pairs=True)
    val_set = (Seq2SeqDataset(splits["val"], tokenizer, cfg.max_src_len, cfg.max_tgt_len, retriever)
               if splits["val"] else None)
    longest = max(s + t for s, t in train_set.lengths)
    if cfg.batch_tokens < longest:
        raise ValueError(f"--batch-tokens {cfg.batch_tokens} is below the longest training pair ({longest} tokens "
                         f"after the cuts at --max-src-len {cfg.max_src_len} and --max-tgt-len {cfg.max_tgt_len}); "
                         f"raise it or lower those")
    # --- model: identical initial weights on every rank (DDP also broadcasts rank 0's)
    torch.manual_seed(cfg.seed)
    model_cfg = (ModelConfig(**state["model_config"]) if state else ModelConfig.preset(
        cfg.model, vocab_size=tokenizer.vocab_size, max_len=max(cfg.max_src_len, cfg.max_tgt_len),
        max_src_len=cfg.max_src_len, **sizes))
    model = Seq2Seq(model_cfg).to(device)
    model.retriever = retriever
    torch.manual_seed(cfg.seed + rank)            # dropout masks differ between ranks
    train_model = torch.compile(model) if cfg.compile else model
    if world > 1:
        train_model = torch.nn.parallel.DistributedDataParallel(
            train_model, device_ids=[device.index] if device.type == "cuda" else None)
    # --- the trainer: optimiser, schedule, loss scaler, EMA, batch stream
    trainer = Trainer(cfg, model, tokenizer, train_set, val_set, device=device, precision=precision, rank=rank,
                      world_size=world, train_model=train_model, log=log)
    if device.type == "cpu" and cfg.threads == 0 and world == 1 and torch.get_num_threads() > 1:
        choose_threads(trainer, state, log)       # before the peak is measured: on the threads that train
    run = Run(cfg, trainer, run_dir, log, retrieval)
    if state is not None:
        run.load_state_dict(state)
    else:
        run.write_log({"kind": "info", "step": 0, "params": model.num_params(), "train_pairs": len(train_set),
                       "val_pairs": len(splits["val"]), "batches_per_epoch": len(trainer.sampler.epoch_batches(0)),
                       "device": str(device), "precision": precision, "world_size": world,
                       "peak_flops": run.peak, "peak_source": run.peak_source})
    log(f"model: {model.num_params() / 1e6:.2f}M parameters, vocab {model_cfg.vocab_size}; "
        f"device {device} x{world}, {precision}; batch {cfg.batch_tokens} tokens x {cfg.grad_accum} micro "
        f"x {world} processes; peak {run.peak / 1e12:.2f} TFLOP/s ({run.peak_source})")
    return run


class Run:
    """What a run keeps besides the learning state: its directory, clock, best evaluation and log."""

    def __init__(self, cfg: TrainConfig, trainer: Trainer, run_dir: RunDirectory, log=print, retrieval=None):
        self.cfg, self.trainer, self.run_dir, self.out, self.log = cfg, trainer, run_dir, run_dir.path, log
        self.retrieval = retrieval            # what checkpoints record of the corpus (corpusfile.write_corpus)
        self.tokenizer_text = trainer.tokenizer.to_text()   # what every state embeds (never the file's bytes)
        self.is_main = trainer.rank == 0
        self.max_steps = cfg.max_steps        # may shrink to fit --time-budget (see refit_to_budget)
        self.elapsed, self.best_val = 0.0, float("inf")
        self._cpu0 = time.process_time()      # CPU seconds of this process (all threads) since the run started
        self.peak, self.peak_source = peak_flops(trainer.device) if self.is_main else (float("nan"), "")
        self.progress = Progress(self.peak, self.peak_source, lambda: peak_flops(trainer.device), log)
        self.log = trainer.log = self.progress.log   # every message first clears the progress line
        self.budget = Budget(cfg.time_budget, cfg.max_steps, cfg.warmup_steps) if cfg.time_budget > 0 else None
        self._said_steps, self._said_torch_schedule = cfg.max_steps, False
        self._eval_s = 0.0                    # seconds the last evaluation and save took (the budget keeps them)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        t = self.trainer
        return {**t.state_dict(), "max_steps": self.max_steps, "model_config": dataclasses.asdict(t.model.cfg),
                "train_config": dataclasses.asdict(self.cfg), "model": ckpt.model_state(t.model),
                "rng": ckpt.rng_state(), "tokenizer": self.tokenizer_text,
                "elapsed": self.elapsed, "best_val": self.best_val, "best_by": self.best_by(),
                "threads": torch.get_num_threads(), "retrieval": self.retrieval}

    def load_state_dict(self, s: dict) -> None:
        t = self.trainer
        t.model.load_state_dict(s["model"])
        t.load_state_dict(s)
        self.elapsed, self.max_steps, self.best_val = s["elapsed"], s["max_steps"], s["best_val"]
        if s["train_config"]["max_steps"] != self.cfg.max_steps and isinstance(t.schedule, Schedule):
            # --max-steps given again on --resume: extend (or shorten) the run; the decay is re-spread over it
            self.max_steps = self.cfg.max_steps
            t.schedule.set_total_steps(self.cfg.max_steps)
        if s.get("best_by") != self.best_by():
            # subtle: best_val is a chrF (negated) or an NLL; comparing one with the other would keep or
            # replace model.pt for no reason. A run resumed with another --select-by starts a new best.
            self.log(f"model.pt selection changed to {self.best_by()} on resume: the next evaluation becomes the best")
            self.best_val = float("inf")
        ckpt.set_rng_state(s["rng"])
        if t.world > 1:
            # subtle: only rank 0's generators were saved; other ranks get a fresh seed that depends on rank
            # and step, so dropout masks still differ between ranks (multi-process resume is exact in the
            # data order and the weights, not in every dropout mask).
            torch.manual_seed(self.cfg.seed + t.rank + 1000 * t.step)
        if self.is_main:   # drop log records past the resumed step (the killed run got further than its state)
            dropped = runlog.truncate_after(self.out / runlog.LOG_FILE, t.step)
            if dropped:
                self.log(f"warning: {runlog.LOG_FILE}: dropped {len(dropped)} line(s) that were not records: "
                         + "; ".join(dropped[:5]) + (" ..." if len(dropped) > 5 else ""))

    def save(self) -> bool:
        """Write state-<step>.pt, unless the weights are not sound (then no good state is replaced). True if written."""
        fault = self.trainer.weights_are_sound()
        if self.is_main:
            if fault is None:
                path = ckpt.save_state(self.out, self.state_dict(), self.cfg.keep_last)
                self.log(f"saved {path}")
            else:
                self.log(f"warning: not saving step {self.trainer.step}: {fault}; the saved states are kept")
        if self.trainer.world > 1:
            dist.barrier()
        return fault is None

    def close(self) -> None:
        """Release the run directory's lock (the process ending does it too)."""
        self.run_dir.release()

    def best_by(self) -> str:
        return "chrf" if self.cfg.select_by == "chrf" and self.cfg.eval_generate > 0 else "nll"

    def selection_score(self, record: dict) -> float:
        """Lower is better. By default the validation answers' greedy chrF decides which weights become
        model.pt: on a small data set the validation NLL is often best early, while the answers keep improving
        long after (make train: NLL best at step 200 with 38 % distinct answers, chrF best at step 500 with
        100 %; bench/answers.py then found the training questions answered with chrF 99.9)."""
        if self.best_by() == "chrf" and "chrf" in record:
            return -record["chrf"]
        return record["nll"]

    def save_best(self, record: dict) -> None:
        if self.is_main and self.trainer.weights_are_sound() is None:
            t = self.trainer
            ckpt.save_model(self.out, t.model, t.tokenizer, ema=t.ema, step=t.step, val_loss=record.get("nll"),
                            chrf=record.get("chrf"), train_config=dataclasses.asdict(self.cfg),
                            retrieval=self.retrieval)

    def write_log(self, record: dict) -> None:
        if self.is_main:
            runlog.append(self.out / runlog.LOG_FILE, record)

    # ------------------------------------------------------------------ the time budget
    def refit_to_budget(self) -> None:
        """--time-budget: re-fit max_steps to what the remaining time allows (machinery.progress.Budget), so
        the learning rate has decayed to min_lr when time runs out; said when it moves by more than 5 %."""
        fits = self.budget.refit(self.trainer.step, self.elapsed, self._eval_s)
        if fits is None or fits == self.max_steps:
            return
        if not isinstance(self.trainer.schedule, Schedule):
            if not self._said_torch_schedule:
                self.log("time budget: PyTorch's schedulers cannot be re-fitted mid-run; the schedule follows "
                         "max_steps, and the run stops when time is up")
                self._said_torch_schedule = True
            return
        if abs(fits - self._said_steps) > 0.05 * self._said_steps:
            self.log(f"time budget {self.cfg.time_budget} min: max_steps {self._said_steps} -> {fits}, the "
                     f"schedule decays to min_lr by then")
            self._said_steps = fits
        self.trainer.schedule.set_total_steps(fits)
        self.max_steps = fits

    # ------------------------------------------------------------------ the loop
    def _evaluate(self) -> dict | None:
        """Evaluate, print one line, log the record, and keep model.pt if this is the best so far."""
        record = self.trainer.evaluate()
        if record is None:
            return None
        record.update(elapsed_s=self.elapsed, cpu_s=time.process_time() - self._cpu0)
        self.log(f"eval step {record['step']}: val loss {record['nll']:.4f}, ppl {record['perplexity']:.2f}, "
                 f"token acc {record['accuracy']:.3f}, top-5 {record['top5_accuracy']:.3f}"
                 + (f", gain {record['cond_gain']:.3f}" if "cond_gain" in record else "")
                 + (f", BLEU {record['bleu']:.2f}, chrF {record['chrf']:.2f}, distinct "
                    f"{record['distinct']:.2f}" if "bleu" in record else ""))
        self.write_log(record)
        if self.selection_score(record) < self.best_val:
            self.best_val = self.selection_score(record)
            self.save_best(record)
        return record

    def fit(self) -> dict | None:
        """Train to max_steps (or the time budget), evaluating, checkpointing and logging on the way; the run
        directory's lock is released at the end, also on an error."""
        try:
            return self._fit()
        finally:
            self.close()

    def _fit(self) -> dict | None:
        cfg, t, last_eval = self.cfg, self.trainer, None
        start = time.perf_counter() - self.elapsed
        while t.step < self.max_steps:
            t0 = time.perf_counter()
            rec = t.train_step()
            self.elapsed = time.perf_counter() - start
            if rec["kind"] == "skip":
                self.log(f"\nwarning: non-finite loss/gradient at step {rec['step']} (loss {rec['loss']}, "
                         f"grad norm {rec['grad_norm']}); step skipped, nothing applied "
                         f"({rec['bad_in_a_row']} in a row, {rec['skipped']} in total)")
                self.write_log(rec)
                if t.bad_in_a_row >= cfg.max_bad_steps:
                    # the weights are those of the last applied step: saved only if they are sound
                    saved = self.save()
                    newest = ckpt.state_files(self.out)
                    where = (f"The last good state (step {t.step}) is saved in {self.out}" if saved else
                             f"The weights after step {t.step} are broken and were not saved; the newest good state "
                             f"is {newest[-1]}" if newest else
                             f"The weights after step {t.step} are broken and no good state was saved")
                    raise TrainingAborted(
                        f"{t.bad_in_a_row} non-finite steps in a row after step {t.step}: training stopped. "
                        f"{where}. Lower --lr, keep --grad-clip on, use --precision bf16 rather than fp16, or "
                        f"check the data.")
                continue
            if self.budget is not None:
                self.refit_to_budget()
            seconds_left = cfg.time_budget * 60 - self.elapsed if cfg.time_budget > 0 else float("inf")
            line = self.progress.update(rec, time.perf_counter() - t0, self.max_steps, seconds_left)
            rec["elapsed_s"] = self.elapsed
            out_of_time = cfg.time_budget > 0 and self.elapsed >= cfg.time_budget * 60
            if t.world > 1:   # every rank must stop at the same step
                out_of_time = bool(t.all_reduce(torch.tensor([float(out_of_time)], device=t.device)).item() > 0)
            last = t.step == self.max_steps or out_of_time
            log_now = t.step % cfg.log_every == 0 or t.step == 1 or last
            if self.is_main:
                self.progress.show(line, log_now)
            if log_now:
                self.write_log(rec)
            t_eval = time.perf_counter()
            if t.step % cfg.eval_every == 0 or last:
                last_eval = self._evaluate()
            if t.step % cfg.save_every == 0 or last:
                self.save()
            if t.step % cfg.eval_every == 0:
                self._eval_s = time.perf_counter() - t_eval
            if out_of_time:
                self.log(f"time budget of {cfg.time_budget} min reached at step {t.step}")
                break
        self.progress.end()
        if t.val_set is None:   # nothing to select on: the final weights are the model
            self.save_best({})
        chosen = ("the final weights, no validation pairs" if t.val_set is None else
                  "best by greedy chrF on validation" if self.best_by() == "chrf" else "best by validation loss")
        self.log(f"checkpoint: {self.out.resolve()} (model.pt = {chosen}"
                 f"{', EMA weights' if t.ema is not None else ''}; load with minillm.checkpoint.load)")
        return last_eval
