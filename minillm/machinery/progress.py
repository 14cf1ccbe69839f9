"""Telling the truth about speed on a busy machine: the progress line, the time budget, the thread count.

  * Progress: tokens/s smoothed over recent steps (one slow step does not swing it 10x), MFU against one peak
    stated at the start (a figure above it is shown as unknown, never as 143 %), an ETA that is never negative,
    and on a terminal one line that rewrites itself and is cleared before any other message is printed.
  * Budget: with --time-budget the run's length is fitted once, early, from measured seconds per step and a
    measured evaluation and save; from then on the total on the progress line does not move.
  * faster_thread_count: one OpenMP thread per core is PyTorch's default, and on cores busy with other work
    those threads wait on each other (measured: 4.1 s/step against 0.79 s with one thread). Timing a few
    probe steps at each count and keeping the faster replaces a guess with a measurement.
"""
from __future__ import annotations

import math
import sys
import time

import torch

from minillm.batching import collate
from minillm.losses import masked_cross_entropy
from minillm.machinery.device import peak_flops


def _clock(seconds: float) -> str:
    seconds = max(0.0, seconds)
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


def stated_peak(device, trials: int = 5) -> tuple[float, str]:
    """The peak a run's MFU is measured against, fixed for the whole run (resumes included). On the CPU the best
    of a few timed matmuls (the first ones also pay for waking the core up): a single 0.2 s timing on busy cores
    varied by a third from run to run, which made the same speed show as 51 % MFU in one run and 75 % in the
    next."""
    if device.type != "cpu":
        return peak_flops(device)
    flops, source = max(peak_flops(device) for _ in range(trials))
    return flops, f"{source}, best of {trials}"


class Progress:
    """The progress line of a run, and the `log` that must not collide with it."""

    def __init__(self, peak: float, peak_source: str, log=print, tty: bool | None = None, smoothing: float = 0.1):
        self.peak, self.peak_source = peak, peak_source
        self._log, self.smoothing = log, smoothing
        self.tty = sys.stdout.isatty() if tty is None else tty
        self._tokens = self._seconds = self._flops = None      # exponential moving averages per step
        self._line_open, self._said_above_peak = False, False

    def log(self, *args, **kwargs) -> None:
        """Print a message; on a terminal, first clear the progress line so the two never merge."""
        if self._line_open:
            print("\r\x1b[K", end="", flush=True)
            self._line_open = False
        self._log(*args, **kwargs)

    def _average(self, old, new):
        return new if old is None else old + self.smoothing * (new - old)

    def update(self, rec: dict, step_s: float, max_steps: int | None, seconds_left: float) -> str:
        """Add the figures to `rec` (tokens_per_s, mfu) and return the progress line for this step. max_steps
        None: not known yet (the time budget is still being measured); the line shows "?" and no ETA."""
        self._tokens = self._average(self._tokens, rec["tokens"])
        self._flops = self._average(self._flops, rec["flops"])
        self._seconds = self._average(self._seconds, step_s)
        tok_s, flop_s = self._tokens / self._seconds, self._flops / self._seconds
        mfu = flop_s / self.peak if self.peak > 0 else float("nan")   # nan stays nan: "unknown"
        if mfu > 1:   # the stated peak was measured while other work held the cores
            mfu = float("nan")
            if not self._said_above_peak:
                self._said_above_peak = True
                self.log(f"note: MFU not shown from step {rec['step']}: the achieved {flop_s / 1e12:.3f} TFLOP/s is "
                         f"above the peak measured at the start ({self.peak / 1e12:.3f}); the cores were busier then")
        rec.update(tokens_per_s=tok_s, mfu=mfu)
        shown_mfu = "n/a" if math.isnan(mfu) else f"{100 * mfu:5.2f}%"
        if max_steps is None:
            total, eta = "?", "?"
        else:
            total, eta = max_steps, _clock(min((max_steps - rec["step"]) * self._seconds, seconds_left))
        return (f"step {rec['step']:6d}/{total} | loss {rec['loss']:.4f} | lr {rec['lr']:.2e} | "
                f"{tok_s:8.0f} tok/s | MFU {shown_mfu} | skipped {rec['skipped']} | ETA {eta}")

    def end(self) -> None:
        """Leave the last progress line on the terminal and move below it."""
        if self._line_open:
            print(flush=True)
            self._line_open = False

    def show(self, line: str, log_this_step: bool) -> None:
        """On a terminal: rewrite the one progress line. Otherwise: a plain line at each log interval."""
        if self.tty:
            print("\r\x1b[K" + line, end="", flush=True)
            self._line_open = True
        elif log_this_step:
            self._log(line)


class Budget:
    """Fits the run's length to --time-budget minutes, once.

    The run trains `start` steps (start-up and warm-up, not counted), then `evidence` more, timing them; then it
    evaluates and saves once, timing that too, and calls fit(step, elapsed, eval_s, save_s). The fit is the
    number of steps whose time, with an evaluation every eval_every steps and a save every save_every steps
    and both once more at the end, fits in the budget less a share `reserve`; never past the configured
    max_steps, nor before the warmup ends. It is not changed afterwards: a total that moves from line to line
    is no total. A machine that slows down later still stops the run when the time is up (the run says so).
    Steps count from the first one this process trains, so a run resumed before its fit is fitted too.
    """

    def __init__(self, minutes: float, max_steps: int, warmup_steps: int, eval_every: int, save_every: int,
                 start: int = 5, evidence: int = 10, reserve: float = 0.05):
        self.seconds, self.max_steps, self.warmup_steps = minutes * 60, max_steps, warmup_steps
        self.eval_every, self.save_every, self.reserve = eval_every, save_every, reserve
        self.start, self.evidence = start, evidence
        self._first, self._start_mark = None, None   # the first step trained; (step, elapsed) after `start`
        self.fitted, self.per_step = None, None

    def pending(self) -> bool:
        """True while a fit is still to come: the run is longer than the steps that measure it."""
        return (self.fitted is None and self._first is not None
                and self._first + self.start - 1 + self.evidence < self.max_steps)

    def measure(self, step: int, elapsed: float) -> bool:
        """Called after each step; True at the step where the evaluation and save are to be timed and fit()
        called."""
        if self._first is None:
            self._first = step
        if step == self._first + self.start - 1:
            self._start_mark = (step, elapsed)
        return self.pending() and self._start_mark is not None and step == self._start_mark[0] + self.evidence

    def fit(self, step: int, elapsed: float, eval_s: float, save_s: float) -> int:
        """The fitted max_steps. elapsed: seconds of training at `step`, before the timed evaluation and save."""
        self.per_step = (elapsed - self._start_mark[1]) / (step - self._start_mark[0])
        # seconds per further step, the evaluations and saves spread over the steps between them
        per_step = self.per_step + eval_s / self.eval_every + save_s / self.save_every
        left = self.seconds * (1 - self.reserve) - elapsed - eval_s - save_s - (eval_s + save_s)   # the last ones
        fits = step + int(max(0.0, left) / per_step)
        self.fitted = min(self.max_steps, max(fits, self.warmup_steps + 1, step + 1))
        return self.fitted


def faster_thread_count(probe, counts, set_threads, repeats: int = 3) -> tuple[int, dict]:
    """(the count whose probe ran fastest, {count: median seconds}). probe() runs one representative piece of
    work; the counts are tried in turn, `repeats` rounds interleaved, so a change of load hits them alike."""
    times = {n: [] for n in counts}
    for _ in range(repeats):
        for n in counts:
            set_threads(n)
            t0 = time.perf_counter()
            probe()
            times[n].append(time.perf_counter() - t0)
    medians = {n: sorted(ts)[len(ts) // 2] for n, ts in times.items()}
    return min(medians, key=medians.get), medians


def choose_threads(trainer, state: dict | None, log) -> None:
    """--threads 0 on the CPU: time a probe step (forward and backward of a few training pairs, eval mode so
    no random number is drawn) at one thread and at all, keep the faster. A resumed run keeps its count, so
    its arithmetic is the same as before the interruption."""
    if state is not None and state.get("threads"):
        torch.set_num_threads(state["threads"])
        log(f"threads: {state['threads']}, as before the resume")
        return
    model, all_threads = trainer.model, torch.get_num_threads()
    batch = collate(trainer.train_set.items[:16], trainer.tokenizer.pad_id)

    def probe():
        model.eval()
        logits = model(batch["src_ids"], batch["tgt_in_ids"])                        # (B, T, V)
        masked_cross_entropy(logits, batch["tgt_out_ids"], trainer.tokenizer.pad_id)[0].backward()
        model.zero_grad(set_to_none=True)
        model.train()
    probe()                                                                            # warm-up, untimed
    best, seconds = faster_thread_count(probe, (1, all_threads), torch.set_num_threads)
    torch.set_num_threads(best)
    log(f"threads: {best} (a probe step took {seconds[1]:.3f} s on 1 thread, {seconds[all_threads]:.3f} s on "
        f"{all_threads}; --threads N to choose)")
