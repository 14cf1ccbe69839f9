"""Training never loses the good model: one test per way a run could lose it or crash on its own files.

Each test drives a real tiny run (minillm.machinery.run.start_run) in a temporary directory.
"""
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
from minillm.machinery.run import TrainingAborted, start_run
from minillm.tokenizer import BPETokenizer
from minillm.recipe import TrainConfig

REPO = Path(__file__).resolve().parent.parent
TINY = dict(corpus="", vocab_size=300, d_model=32, n_heads=2, n_layers=1, d_ff=64, dropout=0.0, batch_tokens=400, lr=3e-3,
            min_lr=3e-4, warmup_steps=1, max_steps=4, eval_every=1000, eval_generate=0, save_every=2,
            log_every=1, device="cpu")


def write_pairs(path, n=40, extra=None):
    rows = [{"Soru": f"{i}. madde neyi düzenler?", "Cevap": f"{i}. madde kanunun {i % 7}. konusunu düzenler."}
            for i in range(n)] + (extra or [])
    path.write_text(json.dumps(rows, ensure_ascii=True), encoding="utf-8")   # ascii: \ud800 stays a lone escape
    return path


def cfg_for(tmp_path, **kw):
    data = tmp_path / "pairs.json"
    if not data.exists():
        write_pairs(data)
    return TrainConfig(**{**TINY, "data": str(data), "out": str(tmp_path / "run"), **kw})


def finished_run(tmp_path, **kw):
    cfg = cfg_for(tmp_path, **kw)
    start_run(cfg, log=lambda *a: None).fit()
    return cfg


# 1. ---------------------------------------------------------------------------------------------------------

def test_broken_weights_are_never_saved_and_the_abort_names_the_newest_good_state(tmp_path):
    lines = []
    run = start_run(cfg_for(tmp_path, max_steps=50, keep_last=1, max_bad_steps=2), log=lines.append)
    for _ in range(4):
        run.trainer.train_step()
    assert run.save()                                                  # step 4: a good state
    with torch.no_grad():                                              # a blow-up: finite, but absurd weights
        for p in run.trainer.model.parameters():
            p.mul_(1e30)
    assert "non-finite loss" in run.trainer.weights_are_sound()
    assert not run.save()                                              # refused, and state-4 is not deleted
    with torch.no_grad():
        run.trainer.model.embed.weight.fill_(float("nan"))
    with pytest.raises(TrainingAborted, match=r"broken and were not saved; the newest good state is .*state-00000004"):
        run.fit()
    assert [p.name for p in ck.state_files(tmp_path / "run")] == ["state-00000004.pt"]
    assert ck.finite_weights(ck.latest_state(tmp_path / "run"))
    assert any("not saving step" in line for line in lines)


def test_resume_skips_a_newer_state_with_non_finite_weights(tmp_path):
    cfg = finished_run(tmp_path)                                      # states 2 and 4
    state = ck.read(tmp_path / "run" / "state-00000004.pt")
    state["model"]["embed.weight"][0, 0] = float("inf")
    state["step"] = 6
    ck.save_state(tmp_path / "run", {k: v for k, v in state.items() if k not in ("format", "version", "sha256")},
                  keep_last=5)
    lines = []
    run = start_run(TrainConfig(**{**cfg.__dict__, "max_steps": 8}), resume=True, log=lines.append)
    assert run.trainer.step == 4
    assert any("state-00000006.pt: its weights are not finite" in line for line in lines)
    run.close()


# 2. ---------------------------------------------------------------------------------------------------------

KILL_MID_WRITE = """
import os, signal, sys, torch
sys.path.insert(0, {repo!r})
from minillm.machinery import checkpoint as ck
def torn(obj, f):
    f.write(b"PK half of a checkpoint")
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)          # kill -9 in the middle of the write
torch.save = torn
ck.atomic_save({{"kind": "train-state", "step": 9}}, {path!r})
"""


def test_a_kill_during_a_write_leaves_no_temporary_file_after_resume(tmp_path):
    cfg = finished_run(tmp_path)
    target = tmp_path / "run" / "state-00000009.pt"
    proc = subprocess.run([sys.executable, "-c", KILL_MID_WRITE.format(repo=str(REPO), path=str(target))])
    assert proc.returncode == -signal.SIGKILL
    leftovers = [p.name for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")]
    assert len(leftovers) == 1 and not target.exists()                # the kill left a temporary file
    lines = []
    run = start_run(TrainConfig(**{**cfg.__dict__, "max_steps": 6}), resume=True, log=lines.append)
    run.fit()
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")]
    assert any("removed 1 temporary file" in line and leftovers[0] in line for line in lines)


# 3. ---------------------------------------------------------------------------------------------------------

def test_an_edited_tokenizer_file_is_an_error_and_a_damaged_one_falls_back_to_the_saved_copy(tmp_path, capsys):
    cfg = finished_run(tmp_path)
    tok_file = tmp_path / "run" / ck.TOKENIZER_FILE
    original = tok_file.read_text(encoding="utf-8")
    BPETokenizer.train(["başka bir metin, başka birleşmeler"] * 3, vocab_size=280).save(tok_file)
    with pytest.raises(ck.CheckpointError, match="tokenizer.bpe differs from the tokenizer saved in"):
        ck.load(tmp_path / "run")
    sys.path.insert(0, str(REPO))
    from train import main
    assert main([f"--out={cfg.out}", "--resume", "--max-steps=6"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "differs from the tokenizer saved" in err[0]
    tok_file.write_text(original[: len(original) // 2], encoding="utf-8")    # damaged: cut in the middle
    lines = []
    run = start_run(TrainConfig(**{**cfg.__dict__, "max_steps": 6}), resume=True, log=lines.append)
    assert run.trainer.tokenizer.to_text() == original                         # the checksummed copy
    assert any("is damaged" in line and "using the copy saved in" in line for line in lines)
    run.close()


@pytest.mark.parametrize("pattern", ["", "(a+)+$", "."])
def test_a_tokenizer_file_with_another_pattern_is_refused(tmp_path, pattern):
    tok = BPETokenizer.train(["Anayasa madde 1"] * 3, vocab_size=270)
    lines = tok.to_text().split("\n")
    lines[1] = "pattern " + json.dumps(pattern)
    (tmp_path / "t.bpe").write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(ValueError, match="line 2: the pattern is not minillm's pre-tokenisation pattern"):
        BPETokenizer.load(tmp_path / "t.bpe")


# 4. ---------------------------------------------------------------------------------------------------------

def test_a_damaged_log_does_not_stop_a_resume_and_each_dropped_line_is_named(tmp_path):
    cfg = finished_run(tmp_path)
    log_path = tmp_path / "run" / runlog.LOG_FILE
    with open(log_path, "ab") as f:
        f.write(b'[1, 2]\n{"kind": "train", "step": "seven"}\n\xff\xfe not utf-8\n{"kind": "tra')
    lines = []
    run = start_run(TrainConfig(**{**cfg.__dict__, "max_steps": 6}), resume=True, log=lines.append)
    run.fit()
    warning = next(line for line in lines if "dropped 4 line(s)" in line)
    assert "a JSON list, not an object" in warning and "no numeric" in warning and "not UTF-8" in warning
    records, skipped = runlog.read(log_path)
    assert skipped == 0 and [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3, 4, 5, 6]


# 5. ---------------------------------------------------------------------------------------------------------

def test_resume_refuses_flags_it_cannot_apply_and_says_which_it_applies(tmp_path, capsys):
    cfg = finished_run(tmp_path)
    sys.path.insert(0, str(REPO))
    from train import main
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()}
    assert main([f"--out={cfg.out}", "--resume", "--lr=0.5", "--d-model=64"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--lr is 0.003" in err[0] and "--d-model is 32" in err[0]
    assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()} == before
    assert main([f"--out={cfg.out}", "--resume", "--max-steps=6", "--lr=0.003"]) == 0   # the same lr is fine
    assert "resume: --max-steps 4 -> 6" in capsys.readouterr().out
    assert ck.latest_state(cfg.out)["train_config"]["lr"] == 0.003


# 6. ---------------------------------------------------------------------------------------------------------

def test_two_runs_cannot_share_a_run_directory(tmp_path):
    cfg = finished_run(tmp_path)
    first = start_run(TrainConfig(**{**cfg.__dict__, "max_steps": 6}), resume=True, log=lambda *a: None)
    with pytest.raises(FileExistsError, match=f"in use by another training process \\(pid {os.getpid()}\\)"):
        start_run(TrainConfig(**{**cfg.__dict__, "max_steps": 6}), resume=True, log=lambda *a: None)
    first.fit()                                                       # releases the lock at the end
    start_run(TrainConfig(**{**cfg.__dict__, "max_steps": 8}), resume=True, log=lambda *a: None).fit()
    records, _ = runlog.read(tmp_path / "run" / runlog.LOG_FILE)
    steps = [r["step"] for r in records if r["kind"] == "train"]
    assert steps == sorted(set(steps)) == list(range(1, 9))           # no duplicate records


# 7. ---------------------------------------------------------------------------------------------------------

def test_when_every_state_is_damaged_each_file_and_its_fault_is_named(tmp_path, capsys):
    cfg = finished_run(tmp_path)
    two, four = tmp_path / "run" / "state-00000002.pt", tmp_path / "run" / "state-00000004.pt"
    two.write_bytes(two.read_bytes()[:100])
    data = bytearray(four.read_bytes())
    data[len(data) // 2] ^= 0xFF
    four.write_bytes(bytes(data))
    sys.path.insert(0, str(REPO))
    from train import main
    assert main([f"--out={cfg.out}", "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no usable state-*.pt" in err[0]
    assert "state-00000002.pt: truncated or corrupted" in err[0] and "state-00000004.pt:" in err[0]


# 8. ---------------------------------------------------------------------------------------------------------

def test_lone_surrogates_in_the_data_train_evaluate_print_and_resume(tmp_path):
    """A real train.py process: its stdout is a UTF-8 pipe, where printing a lone surrogate would raise."""
    data = write_pairs(tmp_path / "pairs.json", extra=[{"Soru": f"bozuk {i} \ud800 soru?", "Cevap": f"bozuk {i} \udfff"}
                                                       for i in range(12)])
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in {**TINY, "eval_every": 2, "eval_generate": 40,
                                                         "eval_max_new_tokens": 4, "print_samples": 40,
                                                         "val_fraction": 0.3, "threads": 1}.items()]
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}

    def train(*extra):
        return subprocess.run([sys.executable, str(REPO / "train.py"), f"--data={data}", f"--out={tmp_path / 'run'}",
                               *extra], cwd=REPO, env=env, capture_output=True, text=True, errors="replace")
    first = train(*flags)
    assert first.returncode == 0, first.stderr[-500:]
    assert "\\ud800" in first.stdout or "\\udfff" in first.stdout       # shown escaped
    resumed = train("--resume", "--max-steps=6")
    assert resumed.returncode == 0, resumed.stderr[-500:]
    assert ck.latest_state(tmp_path / "run")["step"] == 6
