"""Specification of minillm/machinery/progress.py: figures that stay true on a busy machine (no real timing here:
the clock is faked wherever time matters)."""
import math

from minillm.machinery import progress
from minillm.machinery.progress import Progress, faster_thread_count


def record(step, tokens=1000, flops=5e9, loss=2.0):
    return {"step": step, "tokens": tokens, "flops": flops, "loss": loss, "lr": 1e-3, "skipped": 0}


def test_mfu_is_never_shown_above_100_percent():
    notes = []
    # the peak was measured on busy cores (1 GFLOP/s) and the re-measurement is still below the achieved 5
    p = Progress(1e9, "measured", remeasure_peak=lambda: (2e9, "again"), log=notes.append, tty=False)
    rec = record(1)
    line = p.update(rec, 1.0, 10, float("inf"))
    assert math.isnan(rec["mfu"]) and "MFU n/a" in line and "unknown" in p.peak_source
    assert len(notes) == 1 and "MFU not shown" in notes[0]
    # a re-measurement above the achieved rate is used instead
    p = Progress(1e9, "measured", remeasure_peak=lambda: (1e10, "again"), log=notes.append, tty=False)
    rec = record(1)
    p.update(rec, 1.0, 10, float("inf"))
    assert rec["mfu"] == 0.5 and p.peak == 1e10


def test_eta_is_never_negative_and_the_line_clears_itself(capsys):
    p = Progress(1e12, "peak", remeasure_peak=None, log=print, tty=True)
    line = p.update(record(5), 1.0, 10, seconds_left=-30.0)          # the budget is already spent
    assert line.endswith("ETA 0m00s")
    p.show(line, log_this_step=False)
    p.log("eval step 5: ...")                                          # another message: the line goes first
    p.show(line, log_this_step=False)
    p.end()
    out = capsys.readouterr().out
    assert out == "\r\x1b[K" + line + "\r\x1b[K" + "eval step 5: ...\n" + "\r\x1b[K" + line + "\n"


def test_tokens_per_second_is_smoothed_and_plain_output_logs_each_interval(capsys):
    p = Progress(1e12, "peak", remeasure_peak=None, log=print, tty=False)
    rates = []
    for step in range(1, 12):
        rec = record(step)
        p.update(rec, 10.0 if step == 11 else 1.0, 100, float("inf"))  # one step 10x slower
        rates.append(rec["tokens_per_s"])
    assert rates[9] == 1000 and rates[10] > 500                        # one slow step does not halve the rate
    p.show("a line", log_this_step=False)
    p.show("another", log_this_step=True)
    assert capsys.readouterr().out == "another\n"                      # not a terminal: only the interval lines


def test_the_faster_thread_count_wins(monkeypatch):
    clock = {"now": 0.0, "threads": 1}
    monkeypatch.setattr(progress.time, "perf_counter", lambda: clock["now"])
    cost = {1: 0.8, 2: 4.1}                       # busy cores: two threads wait on each other

    def probe():
        clock["now"] += cost[clock["threads"]]
    best, seconds = faster_thread_count(probe, (1, 2), lambda n: clock.update(threads=n))
    assert best == 1 and seconds == {1: 0.8, 2: 4.1}
    cost.update({1: 0.8, 2: 0.5})                 # idle cores: two threads are faster
    assert faster_thread_count(probe, (1, 2), lambda n: clock.update(threads=n))[0] == 2
