"""Telling the truth about speed on a busy machine: the progress line, the time budget, the thread count.

  * Progress: tokens/s smoothed over recent steps (one slow step does not swing it 10x), MFU against a peak
    that the achieved rate may not exceed (a peak measured while other work held the cores is re-measured,
    then reported as unknown rather than as 143 %), an ETA that is never negative, and on a terminal one
    line that rewrites itself and is cleared before any other message is printed.
  * Budget: with --time-budget the run length is re-fitted every few steps from the recent seconds per step
    (evaluations included), so the learning rate reaches its floor when time runs out, even when the
    machine gets slower or faster half-way.
  * faster_thread_count: one OpenMP thread per core is PyTorch's default, and on cores busy with other work
    those threads wait on each other (measured: 4.1 s/step against 0.79 s with one thread). Timing a few
    probe steps at each count and keeping the faster replaces a guess with a measurement.
"""
from __future__ import annotations

import math
import sys
import time
from collections import deque

import torch

from minillm.batching import collate
from minillm.losses import masked_cross_entropy


def _clock(seconds: float) -> str:
    seconds = max(0.0, seconds)
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


class Progress:
    """The progress line of a run, and the `log` that must not collide with it."""

    def __init__(self, peak: float, peak_source: str, remeasure_peak, log=print, tty: bool | None = None,
                 smoothing: float = 0.1):
        self.peak, self.peak_source, self.remeasure_peak = peak, peak_source, remeasure_peak
        self._log, self.smoothing = log, smoothing
        self.tty = sys.stdout.isatty() if tty is None else tty
        self._tokens = self._seconds = self._flops = None      # exponential moving averages per step
        self._line_open = False

    def log(self, *args, **kwargs) -> None:
        """Print a message; on a terminal, first clear the progress line so the two never merge."""
        if self._line_open:
            print("\r\x1b[K", end="", flush=True)
            self._line_open = False
        self._log(*args, **kwargs)

    def _average(self, old, new):
        return new if old is None else old + self.smoothing * (new - old)

    def update(self, rec: dict, step_s: float, max_steps: int, seconds_left: float) -> str:
        """Add the figures to `rec` (tokens_per_s, mfu) and return the progress line for this step."""
        self._tokens = self._average(self._tokens, rec["tokens"])
        self._flops = self._average(self._flops, rec["flops"])
        self._seconds = self._average(self._seconds, step_s)
        tok_s, flop_s = self._tokens / self._seconds, self._flops / self._seconds
        if flop_s > self.peak and self.remeasure_peak is not None:   # the peak was measured on busy cores
            self.peak, self.peak_source = self.remeasure_peak()
            self.remeasure_peak = None                                 # once: after that the peak is unknown
            if flop_s > self.peak:
                self.peak, self.peak_source = float("nan"), "unknown: measured below the achieved rate"
                self.log(f"note: MFU not shown: the device's peak could not be measured above the achieved "
                         f"{flop_s / 1e12:.3f} TFLOP/s (other work on the cores?)")
        mfu = flop_s / self.peak if self.peak > 0 else float("nan")   # nan stays nan: "unknown"
        rec.update(tokens_per_s=tok_s, mfu=mfu)
        eta = min((max_steps - rec["step"]) * self._seconds, seconds_left)
        shown_mfu = "n/a" if math.isnan(mfu) else f"{100 * mfu:5.2f}%"
        return (f"step {rec['step']:6d}/{max_steps} | loss {rec['loss']:.4f} | lr {rec['lr']:.2e} | "
                f"{tok_s:8.0f} tok/s | MFU {shown_mfu} | skipped {rec['skipped']} | ETA {_clock(eta)}")

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
    """Fits the run's length to --time-budget minutes, again and again as the speed changes.

    refit(step, elapsed, reserve_s) returns the new max_steps: the steps the remaining time allows, less a
    share `reserve` of the budget and `reserve_s` seconds (the run passes what its last evaluation and save
    took: the final ones must fit too). Seconds per step are the slower of the recent window (`window` steps)
    and the whole run so far, evaluations and saves included, so the run ends in time when the machine
    slows down. Never past the configured max_steps, nor before the warmup ends; and once the warmup is
    over, never longer than the previous fit: a longer run would raise the learning rate again. The first
    `start` steps are not used: they pay for start-up and warm-up.
    """

    def __init__(self, minutes: float, max_steps: int, warmup_steps: int, start: int = 5, window: int = 50,
                 reserve: float = 0.05):
        self.seconds, self.max_steps, self.warmup_steps = minutes * 60, max_steps, warmup_steps
        self.start, self.reserve = start, reserve
        self._marks = deque(maxlen=window + 1)           # (step, elapsed seconds) of the recent steps
        self._first = None                               # the first mark, for the whole run's rate
        self._fitted = None

    def refit(self, step: int, elapsed: float, reserve_s: float = 0.0) -> int | None:
        if step < self.start:
            return None
        self._first = self._first or (step, elapsed)
        self._marks.append((step, elapsed))
        if len(self._marks) < 6:                         # at least 5 steps of evidence
            return None
        (s0, t0), (s1, t1), (sf, tf) = self._marks[0], self._marks[-1], self._first
        per_step = max((t1 - t0) / (s1 - s0), (t1 - tf) / (s1 - sf))
        left = self.seconds * (1 - self.reserve) - reserve_s - elapsed
        fits = min(self.max_steps, max(step + int(max(0.0, left) / per_step), self.warmup_steps + 1, step + 1))
        if self._fitted is not None and step > self.warmup_steps:
            fits = min(fits, self._fitted)               # >= step: the previous fit was past the previous step
        self._fitted = fits
        return fits


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
