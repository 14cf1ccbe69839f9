"""How a run stops, and that nothing is lost: after every way a run can end early, the newest good state resumes
exactly (every step's loss bit for bit that of a run that never stopped).

The ways: Ctrl-C and SIGTERM (the step under way is finished and saved, one line says how to resume, exit 130),
a second Ctrl-C (stops at once; the previous state is the newest), Ctrl-C while setting up (nothing is kept), a
full disk after the first save and before it, the run directory moved away mid-run, and an evaluation that
blows up. Each is a tiny run (dropout on, so the random state matters) in this process, except the two that
need a real `python train.py` process and its exit status.
"""
import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minillm.machinery import checkpoint as ck
from minillm.machinery import runlog
from minillm.machinery.rundir import LOCK_FILE
from minillm.machinery.run import RunInterrupted, TrainingAborted, start_run
from minillm.recipe import TrainConfig
from minillm.training import Trainer

REPO = Path(__file__).resolve().parent.parent
TINY = dict(corpus="", vocab_size=300, d_model=32, n_heads=2, n_layers=1, d_ff=64, dropout=0.1, batch_tokens=160,
            lr=3e-3, min_lr=3e-4, warmup_steps=1, max_steps=8, eval_every=1000, eval_generate=0, save_every=2,
            log_every=1, threads=1, device="cpu")


def quiet(*args, **kwargs):
    pass


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    rows = [{"Soru": f"{i}. madde neyi düzenler?", "Cevap": f"{i}. madde kanunun {i % 7}. konusunu düzenler."}
            for i in range(40)]
    path = tmp_path_factory.mktemp("data") / "pairs.json"
    path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    return path


def config(data, out, **kw) -> TrainConfig:
    return TrainConfig(**{**TINY, "data": str(data), "out": str(out), **kw})


def losses(out) -> dict:
    records, skipped = runlog.read(Path(out) / runlog.LOG_FILE)
    assert skipped == 0
    return {r["step"]: r["loss"] for r in records if r["kind"] == "train"}


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """The losses of a run that never stopped."""
    out = tmp_path_factory.mktemp("reference") / "run"
    start_run(config(data, out), log=quiet).fit()
    return losses(out)


def resumes_exactly(data, out, reference) -> int:
    """Resume `out` from its newest good state, finish, and check every step against the reference; returns the
    step it resumed from."""
    saved_peak = ck.latest_state(out)["peak"]
    run = start_run(config(data, out), resume=True, log=quiet)
    resumed_from = run.trainer.step
    assert [run.peak, run.peak_source] == saved_peak     # MFU against the one peak the run stated at its start
    run.fit()
    assert losses(out) == reference
    assert not (Path(out) / LOCK_FILE).exists()
    return resumed_from


def during_step(monkeypatch, step, action):
    """Run action() while the trainer takes step `step` (after its forward and backward, before it ends)."""
    real = Trainer.train_step

    def train_step(self):
        if self.step + 1 == step:
            action(self)
        return real(self)
    monkeypatch.setattr(Trainer, "train_step", train_step)


# ---------------------------------------------------------------------------------------------------------------
# Ctrl-C and SIGTERM, in this process

@pytest.mark.parametrize("signum, name, step", [(signal.SIGINT, "Ctrl-C", 3), (signal.SIGTERM, "SIGTERM", 5)])
def test_a_signal_finishes_the_step_saves_it_and_says_how_to_resume(data, tmp_path, reference, monkeypatch,
                                                                    signum, name, step):
    out = tmp_path / "run"
    during_step(monkeypatch, step, lambda trainer: os.kill(os.getpid(), signum))
    with pytest.raises(RunInterrupted) as stop:
        start_run(config(data, out), log=quiet).fit()
    assert str(stop.value) == (f"interrupted ({name}) at step {step}, saved in {out}; resume: python train.py "
                               f"--out {out} --resume")
    assert ck.latest_state(out)["step"] == step and not (out / LOCK_FILE).exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler       # the handlers are given back
    monkeypatch.undo()
    assert resumes_exactly(data, out, reference) == step


def test_a_second_ctrl_c_stops_at_once_and_the_previous_state_resumes(data, tmp_path, reference, monkeypatch):
    out = tmp_path / "run"

    def twice(trainer):
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)      # the step is cut here: it is neither finished nor saved
    during_step(monkeypatch, 3, twice)
    with pytest.raises(RunInterrupted, match=r"at step 2 by a second Ctrl-C, before it was saved; the newest good "
                                             r"state is .*state-00000002\.pt; resume: python train.py"):
        start_run(config(data, out), log=quiet).fit()
    assert [p.name for p in ck.state_files(out)] == ["state-00000002.pt"] and not (out / LOCK_FILE).exists()
    monkeypatch.undo()
    assert resumes_exactly(data, out, reference) == 2


def test_ctrl_c_while_setting_up_keeps_nothing(data, tmp_path, monkeypatch):
    from minillm.tokenizer import BPETokenizer

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(BPETokenizer, "train", interrupted)
    with pytest.raises(RunInterrupted, match="while setting up, before the first step; nothing was kept"):
        start_run(config(data, tmp_path / "run"), log=quiet)
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------------------------------------------
# Files that cannot be written; an evaluation that blows up

def disk_full(monkeypatch):
    """From now on every fsync fails as on a full disk (the bytes were written, the flush to disk is refused)."""
    def fsync(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr("minillm.files.os.fsync", fsync)


def test_a_full_disk_names_the_file_and_keeps_the_good_states(data, tmp_path, reference, monkeypatch):
    out = tmp_path / "run"
    during_step(monkeypatch, 3, lambda trainer: disk_full(monkeypatch))
    with pytest.raises(TrainingAborted) as stop:
        start_run(config(data, out), log=quiet).fit()
    assert str(stop.value) == (f"cannot write {out}/state-00000004.pt: No space left on device; the newest good "
                               f"state is {out}/state-00000002.pt; resume: python train.py --out {out} --resume")
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")] and not (out / LOCK_FILE).exists()
    monkeypatch.undo()
    assert resumes_exactly(data, out, reference) == 2


def test_a_full_disk_before_the_first_save_leaves_nothing(data, tmp_path, monkeypatch):
    during_step(monkeypatch, 1, lambda trainer: disk_full(monkeypatch))
    with pytest.raises(TrainingAborted, match=r"cannot write .*state-00000002\.pt: No space left on device; nothing "
                                              r"had been saved, so the run's files in .* were removed"):
        start_run(config(data, tmp_path / "run"), log=quiet).fit()
    assert not (tmp_path / "run").exists()


def test_a_run_directory_moved_away_mid_run_resumes_where_it_went(data, tmp_path, reference, monkeypatch):
    out, moved = tmp_path / "run", tmp_path / "moved"
    during_step(monkeypatch, 3, lambda trainer: out.rename(moved))
    with pytest.raises(TrainingAborted, match=rf"cannot write {out}/log\.jsonl: No such file or directory \({out} is "
                                              rf"gone: moved or deleted\); the states saved so far are wherever"):
        start_run(config(data, out), log=quiet).fit()
    assert not out.exists()
    monkeypatch.undo()
    assert resumes_exactly(data, moved, reference) == 2


def test_an_evaluation_that_blows_up_is_one_line_and_the_previous_state_resumes(data, tmp_path, reference,
                                                                                monkeypatch):
    """Weights that blow up during a step (finite, but 1e30 times too large) make the evaluation's decoding see
    NaN logits: once a FloatingPointError traceback; now a TrainingAborted naming the newest good state."""
    out = tmp_path / "run"
    real = Trainer.train_step

    def blow_up(self):
        rec = real(self)
        if self.step == 4:
            with torch.no_grad():
                for p in self.model.parameters():
                    p.mul_(1e30)
        return rec
    monkeypatch.setattr(Trainer, "train_step", blow_up)
    with pytest.raises(TrainingAborted, match=r"the evaluation at step 4 failed \(the model produced non-finite "
                                              r"logits.*the newest good state is .*state-00000002\.pt; resume"):
        start_run(config(data, out, eval_every=4, eval_generate=2, eval_max_new_tokens=4), log=quiet).fit()
    assert [p.name for p in ck.state_files(out)] == ["state-00000002.pt"]
    monkeypatch.undo()
    assert resumes_exactly(data, out, reference) == 2


# ---------------------------------------------------------------------------------------------------------------
# A real `python train.py`: the first line, one line on Ctrl-C, exit 130, no traceback, no lock

def flags(cfg: TrainConfig) -> list[str]:
    return [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()] + [f"--data={cfg.data}", f"--out={cfg.out}"]


@pytest.mark.parametrize("signum, name", [(signal.SIGINT, "Ctrl-C"), (signal.SIGTERM, "SIGTERM")])
def test_train_py_stopped_by_a_signal_says_one_line_and_exits_130(data, tmp_path, reference, signum, name):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, str(REPO / "train.py"), *flags(config(data, out))], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = proc.stdout.readline()
    for line in proc.stdout:                               # stop it while it trains step 4
        if line.startswith("step      3/8 |"):
            proc.send_signal(signum)
            break
    out_rest, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert first == (f"training the small preset on {data} into {out}: 8 steps; Ctrl-C stops after the current "
                     f"step and saves it (then: --out {out} --resume)\n")
    step = ck.latest_state(out)["step"]
    assert step >= 3 and err == (f"train.py: interrupted ({name}) at step {step}, saved in {out}; resume: python "
                                 f"train.py --out {out} --resume\n")
    assert "Traceback" not in out_rest + err and not (out / LOCK_FILE).exists()
    done = subprocess.run([sys.executable, str(REPO / "train.py"), f"--out={out}", "--resume"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert losses(out) == reference and not (out / LOCK_FILE).exists()   # a finished run leaves no lock either


def test_train_py_says_a_full_disk_in_one_line_with_exit_2(data, tmp_path, monkeypatch, capsys):
    sys.path.insert(0, str(REPO))
    from train import main
    out = tmp_path / "run"
    during_step(monkeypatch, 3, lambda trainer: disk_full(monkeypatch))
    assert main(flags(config(data, out))) == 2
    err = capsys.readouterr().err
    assert err == (f"train.py: error: cannot write {out}/state-00000004.pt: No space left on device; the newest "
                   f"good state is {out}/state-00000002.pt; resume: python train.py --out {out} --resume\n")


def test_ctrl_c_while_torch_loads_is_one_line_and_exit_130(capsys):
    """train.py and generate.py import torch (seconds) inside QuietInterrupts: Ctrl-C there printed a 20-line
    traceback from inside torch's own modules."""
    from minillm.machinery.cli import QuietInterrupts
    with pytest.raises(SystemExit) as stop:
        with QuietInterrupts("train.py"):
            os.kill(os.getpid(), signal.SIGINT)
    assert stop.value.code == 130
    assert capsys.readouterr().err == "\ntrain.py: interrupted while starting; nothing was done\n"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
