"""The loop of a training run: steps, evaluations, checkpoints, the log, the time budget, and how a run ends.

    run = start_run(cfg)        # minillm.machinery.run builds a Run: the trainer, the directory, the clock
    run.fit()                   # train to max_steps; model.pt = the best evaluation

How a run ends, and what it leaves: done (model.pt and the last state); Ctrl-C or SIGTERM (the step under way
finishes and is saved: RunInterrupted); a divergence, an evaluation that blows up or a file that cannot be
written (TrainingAborted, naming the newest good state). A fresh run that ends with no checkpoint removes what
it wrote; every run releases and deletes its lock.
"""
from __future__ import annotations

import dataclasses
import signal
import time

import torch
import torch.distributed as dist

from minillm.optim import Schedule
from minillm.recipe import TrainConfig
from minillm.training import Trainer
from minillm.machinery import checkpoint as ckpt, runlog
from minillm.machinery.cli import StopRequests
from minillm.machinery.progress import Budget, Progress, stated_peak
from minillm.machinery.rundir import RunDirectory


class TrainingAborted(RuntimeError):
    """The run cannot go on (non-finite steps, an evaluation that blew up, a write that failed); the message
    names the newest good state."""


class RunInterrupted(Exception):
    """Ctrl-C or SIGTERM: the message says at which step, what was saved and how to resume."""


class Run:
    """What a run keeps besides the learning state: its directory, clock, best evaluation and log."""

    def __init__(self, cfg: TrainConfig, trainer: Trainer, run_dir: RunDirectory, log=print, retrieval=None):
        self.cfg, self.trainer, self.run_dir, self.out, self.log = cfg, trainer, run_dir, run_dir.path, log
        self.retrieval = retrieval            # what checkpoints record of the corpus (corpusfile.write_corpus)
        self.tokenizer_text = trainer.tokenizer.to_text()   # what every state embeds (never the file's bytes)
        self.is_main = trainer.rank == 0
        self.max_steps = cfg.max_steps        # fitted once to --time-budget (see _fit_budget)
        self.elapsed, self.best_val = 0.0, float("inf")
        self._cpu0 = time.process_time()      # CPU seconds of this process (all threads) since the run started
        self.peak, self.peak_source = stated_peak(trainer.device) if self.is_main else (float("nan"), "")
        self.progress = Progress(self.peak, self.peak_source, log)
        self.log = trainer.log = self.progress.log   # every message first clears the progress line
        self.budget = (Budget(cfg.time_budget, cfg.max_steps, cfg.warmup_steps, cfg.eval_every, cfg.save_every)
                       if cfg.time_budget > 0 else None)
        self.stop = StopRequests()            # Ctrl-C / SIGTERM, answered between two steps (see fit)
        self.saved_step = None                # the step of the newest state this process saved

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        t = self.trainer
        return {**t.state_dict(), "max_steps": self.max_steps, "model_config": dataclasses.asdict(t.model.cfg),
                "train_config": dataclasses.asdict(self.cfg), "model": ckpt.model_state(t.model),
                "rng": ckpt.rng_state(), "tokenizer": self.tokenizer_text,
                "elapsed": self.elapsed, "best_val": self.best_val, "best_by": self.best_by(),
                "threads": torch.get_num_threads(), "retrieval": self.retrieval,
                "peak": [self.peak, self.peak_source], "budget_fitted": self.budget_fitted()}

    def load_state_dict(self, s: dict) -> None:
        t = self.trainer
        t.model.load_state_dict(s["model"])
        t.load_state_dict(s)
        self.elapsed, self.max_steps, self.best_val = s["elapsed"], s["max_steps"], s["best_val"]
        if s.get("peak") and self.is_main:    # one peak for the whole run: the one stated when it started
            self.peak, self.peak_source = s["peak"]
            self.progress.peak, self.progress.peak_source = s["peak"]
        if self.budget is not None and s.get("budget_fitted") and s["train_config"]["time_budget"] == \
                self.cfg.time_budget:
            self.budget.fitted = self.max_steps   # fitted before the interruption: the total stays
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
        self.saved_step = t.step
        if self.is_main:   # drop log records past the resumed step (the killed run got further than its state)
            dropped = self._writing(self.out / runlog.LOG_FILE,
                                    lambda: runlog.truncate_after(self.out / runlog.LOG_FILE, t.step))
            if dropped:
                self.log(f"warning: {runlog.LOG_FILE}: dropped {len(dropped)} line(s) that were not records: "
                         + "; ".join(dropped[:5]) + (" ..." if len(dropped) > 5 else ""))

    def _writing(self, path, write):
        """write(), with a failed write (a full disk, the directory moved away) as a TrainingAborted that names
        the file, the cause and the newest good state. Atomic writes leave the previous files as they were."""
        try:
            return write()
        except OSError as e:
            moved = "" if self.out.is_dir() else f" ({self.out} is gone: moved or deleted)"
            raise TrainingAborted(self.ending(f"cannot write {path}: {e.strerror or e}{moved}")) from None

    def save(self, say: bool = True) -> bool:
        """Write state-<step>.pt, unless the weights are not sound (then no good state is replaced). True if written."""
        fault = self.trainer.weights_are_sound()
        if self.is_main:
            if fault is None:
                path = self.out / f"state-{self.trainer.step:08d}.pt"
                self._writing(path, lambda: ckpt.save_state(self.out, self.state_dict(), self.cfg.keep_last))
                if say:
                    self.log(f"saved {path}")
            else:
                self.log(f"warning: not saving step {self.trainer.step}: {fault}; the saved states are kept")
        if self.trainer.world > 1:
            dist.barrier()
        if fault is None:
            self.saved_step = self.trainer.step
        return fault is None

    def ending(self, what: str) -> str:
        """`what` happened: add what is kept and how to go on, in one line (a fresh run with no checkpoint at
        all is removed by fit())."""
        if not self.out.is_dir():
            return f"{what}; the states saved so far are wherever {self.out} went: resume there with --resume"
        newest = ckpt.state_files(self.out)
        if newest:
            return f"{what}; the newest good state is {newest[-1]}; resume: python train.py --out {self.out} --resume"
        if self.run_dir.resume or (self.out / ckpt.MODEL_FILE).exists():
            return f"{what}; no state to resume from in {self.out}"
        return f"{what}; nothing had been saved, so the run's files in {self.out} were removed"

    def close(self) -> None:
        """Release the run directory's lock and delete the lock file (the process ending drops the lock too)."""
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
            self._writing(self.out / ckpt.MODEL_FILE, lambda: ckpt.save_model(
                self.out, t.model, t.tokenizer, ema=t.ema, step=t.step, val_loss=record.get("nll"),
                chrf=record.get("chrf"), train_config=dataclasses.asdict(self.cfg), retrieval=self.retrieval))

    def write_log(self, record: dict) -> None:
        if self.is_main:
            path = self.out / runlog.LOG_FILE
            self._writing(path, lambda: runlog.append(path, record))

    # ------------------------------------------------------------------ the time budget
    def budget_fitted(self) -> bool:
        return self.budget is None or self.budget.fitted is not None

    def _fit_budget(self) -> None:
        """--time-budget, once: time an evaluation and a save, fit max_steps (machinery.progress.Budget) and
        spread the schedule's decay over it, and say so before the first progress line that shows it."""
        t, minutes = self.trainer, self.cfg.time_budget
        t0 = time.perf_counter()
        self._evaluate()
        t1 = time.perf_counter()
        self.save()
        fits = self.budget.fit(t.step, self.elapsed, t1 - t0, time.perf_counter() - t1)
        self.elapsed += time.perf_counter() - t0
        if not isinstance(t.schedule, Schedule):
            self.budget.fitted = self.max_steps
            self.log(f"time budget {minutes:g} min: PyTorch's schedulers cannot be re-fitted; the schedule follows "
                     f"{self.max_steps} steps, and the run stops when the time is up")
            return
        self.log(f"time budget {minutes:g} min: {fits} steps fit ({self.budget.per_step:.2f} s per step, an "
                 f"evaluation and save {t1 - t0:.1f} + {time.perf_counter() - t1:.1f} s); the schedule decays to "
                 f"min_lr by step {fits}")
        t.schedule.set_total_steps(fits)
        self.max_steps = fits

    # ------------------------------------------------------------------ the loop
    def _evaluate(self) -> dict | None:
        """Evaluate, print one line, log the record, and keep model.pt if this is the best so far."""
        try:
            record = self.trainer.evaluate()
        except FloatingPointError as e:       # the weights produce NaN/inf logits: they are not saved
            raise TrainingAborted(self.ending(
                f"the evaluation at step {self.trainer.step} failed ({e}); the weights have blown up. Lower --lr, "
                f"keep --grad-clip on, or check the data")) from None
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
        """Train to max_steps (or the time budget), evaluating, checkpointing and logging on the way.

        Ctrl-C or SIGTERM: the step under way finishes, is saved, and RunInterrupted says where; a second one
        stops at once, without saving that step. Whatever ends the run, the lock is released, and a fresh run
        with no checkpoint at all leaves nothing behind."""
        t = self.trainer
        with self.stop:               # the clean-up below runs inside it too: a third Ctrl-C cannot cut it short
            try:
                return self._fit()
            except KeyboardInterrupt:
                raise RunInterrupted(self.ending(f"interrupted at step {t.step} by a second Ctrl-C, before it was "
                                                 f"saved")) from None
            finally:
                self.progress.end()
                self.close()
                if self.is_main and not ckpt.state_files(self.out) and not (self.out / ckpt.MODEL_FILE).exists():
                    self.run_dir.discard()

    def _stop_now(self, out_of_time: bool) -> tuple[bool, bool]:
        """(out of time, interrupted), the same on every rank: every rank must stop at the same step."""
        flags = [float(out_of_time), float(self.stop.signal is not None)]
        if self.trainer.world > 1:
            flags = self.trainer.all_reduce(torch.tensor(flags, device=self.trainer.device)).tolist()
        return flags[0] > 0, flags[1] > 0

    def _interrupted(self) -> RunInterrupted:
        """The step under way is done: save it (unless it was just saved) and say how to go on."""
        t = self.trainer
        saved = self.saved_step == t.step or self.save(say=False)   # the one line below says it
        how = "SIGTERM" if self.stop.signal == signal.SIGTERM else "Ctrl-C"
        if saved:
            return RunInterrupted(f"interrupted ({how}) at step {t.step}, saved in {self.out}; resume: python "
                                  f"train.py --out {self.out} --resume")
        return RunInterrupted(self.ending(f"interrupted ({how}) at step {t.step}, whose weights were not sound"))

    def _fit(self) -> dict | None:
        cfg, t, last_eval = self.cfg, self.trainer, None
        start = time.perf_counter() - self.elapsed
        while t.step < self.max_steps:
            t0 = time.perf_counter()
            rec = t.train_step()
            self.elapsed = time.perf_counter() - start
            if rec["kind"] == "skip":
                self._skipped(rec)
                continue
            if self.budget is not None and self.budget.measure(t.step, self.elapsed):
                self._fit_budget()
                start = time.perf_counter() - self.elapsed
            seconds_left = cfg.time_budget * 60 - self.elapsed if cfg.time_budget > 0 else float("inf")
            shown_total = None if self.budget is not None and self.budget.pending() else self.max_steps
            line = self.progress.update(rec, time.perf_counter() - t0, shown_total, seconds_left)
            rec["elapsed_s"] = self.elapsed
            out_of_time, interrupted = self._stop_now(cfg.time_budget > 0 and self.elapsed >= cfg.time_budget * 60)
            last = t.step == self.max_steps or out_of_time
            log_now = t.step % cfg.log_every == 0 or t.step == 1 or last or interrupted
            if self.is_main:
                self.progress.show(line, log_now)
            if log_now:
                self.write_log(rec)
            if interrupted:
                raise self._interrupted()
            if t.step % cfg.eval_every == 0 or last:
                last_eval = self._evaluate()
            if t.step % cfg.save_every == 0 or last:
                self.save()
            if out_of_time:
                self.log(f"time budget of {cfg.time_budget:g} min reached at step {t.step} of {self.max_steps}")
                break
        self.progress.end()
        if t.val_set is None:   # nothing to select on: the final weights are the model
            self.save_best({})
        chosen = ("the final weights, no validation pairs" if t.val_set is None else
                  "best by greedy chrF on validation" if self.best_by() == "chrf" else "best by validation loss")
        self.log(f"checkpoint: {self.out.resolve()} (model.pt = {chosen}"
                 f"{', EMA weights' if t.ema is not None else ''}; load with minillm.checkpoint.load)")
        return last_eval

    def _skipped(self, rec: dict) -> None:
        """A non-finite step: log it; after max_bad_steps in a row, save the last good weights (if sound) and
        stop with TrainingAborted."""
        t = self.trainer
        self.log(f"\nwarning: non-finite loss/gradient at step {rec['step']} (loss {rec['loss']}, "
                 f"grad norm {rec['grad_norm']}); step skipped, nothing applied "
                 f"({rec['bad_in_a_row']} in a row, {rec['skipped']} in total)")
        self.write_log(rec)
        if t.bad_in_a_row < self.cfg.max_bad_steps:
            return
        # the weights are those of the last applied step: saved only if they are sound
        saved = self.save()
        what = (f"{t.bad_in_a_row} non-finite steps in a row after step {t.step}: training stopped. Lower --lr, keep "
                f"--grad-clip on, use --precision bf16 rather than fp16, or check the data")
        if saved:
            raise TrainingAborted(f"{what}. The last good state (step {t.step}) is saved in {self.out}")
        raise TrainingAborted(self.ending(f"{what}. The weights after step {t.step} are broken and were not saved"))
