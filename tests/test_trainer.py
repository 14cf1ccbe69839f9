"""Specification of minillm/training.py, minillm/machinery/run.py and train.py: the loop's mechanisms, exact resume after a real kill,
data parallel equivalence, and a tiny model that overfits 8 pairs."""
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minillm.machinery import checkpoint as ck
from minillm.machinery import runlog
from minillm.generation import GenerationConfig, decode_ids
from minillm.losses import masked_cross_entropy
from minillm.optim import lr_at
from minillm.machinery.run import TrainingAborted, start_run
from minillm.machinery.rundir import resume_config
from minillm.recipe import TrainConfig

REPO = Path(__file__).resolve().parent.parent
SUBJECTS = ["kira sözleşmesi", "iş kazası", "miras paylaşımı", "boşanma davası", "vergi cezası", "tapu iptali",
            "trafik cezası", "işe iade", "nafaka", "kamulaştırma", "haksız fiil", "tüketici hakkı"]


def write_pairs(path, n=48):
    """n question/answer pairs of varied length, in the data set's own layout (Soru/Cevap JSON list)."""
    rows = []
    for i in range(n):
        s = SUBJECTS[i % len(SUBJECTS)]
        extra = " ve ilgili süreler" * (i % 4)
        rows.append({"Soru": f"{s} hakkında {i}. soru nedir{extra}?",
                     "Cevap": f"{s} için {i}. cevap kanunda yazılıdır{extra}."})
    path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    return path


# corpus "": these tests are about training itself; retrieval has its own (tests/test_corpusfile.py, test_reliability.py)
TINY = dict(corpus="", vocab_size=300, d_model=32, n_heads=2, n_layers=1, d_ff=64, dropout=0.0, batch_tokens=160,
            lr=3e-3, min_lr=3e-4, warmup_steps=3, max_steps=12, eval_every=1000, eval_generate=0,
            save_every=1000, log_every=1, ema_decay=0.9, device="cpu")


def tiny_cfg(tmp_path, **kw):
    data = tmp_path / "pairs.json"
    if not data.exists():
        write_pairs(data)
    return TrainConfig(**{**TINY, "data": str(data), "out": str(tmp_path / "run"), **kw})


def quiet(*args, **kwargs):
    pass


def read_log(run, kind="train"):
    """{step: record} of one kind, read with the run log's own reader (which also counts unreadable lines)."""
    records, skipped = runlog.read(Path(run) / runlog.LOG_FILE)
    assert skipped == 0
    return {r["step"]: r for r in records if r["kind"] == kind}


# ----------------------------------------------------------------------------------------------------------
# Mechanisms inside one step, each checked against what the step must do

def capture_steps(trainer):
    """Record, at each optimizer.step(), the lr and the gradients the optimiser is about to apply."""
    seen = []

    def hook(opt, args, kwargs):
        seen.append({"lr": opt.param_groups[0]["lr"],
                     "grads": {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}})
    trainer.optimizer.register_step_pre_hook(hook)
    return seen


def test_schedule_drives_the_lr_and_clipping_bounds_the_gradient(tmp_path):
    cfg = tiny_cfg(tmp_path, grad_clip=0.05)
    run = start_run(cfg, log=quiet)
    trainer = run.trainer
    seen = capture_steps(trainer)
    norms = [trainer.train_step()["grad_norm"] for _ in range(6)]
    for step, s in enumerate(seen):
        assert s["lr"] == pytest.approx(lr_at(step, 3e-3, 3, 12, 3e-4, cfg.decay))
        applied = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in s["grads"].values()]))
        assert norms[step] > 0.05                   # the raw gradient was larger than the threshold ...
        assert applied.item() == pytest.approx(0.05, rel=1e-4)  # ... and the optimiser saw it clipped to 0.05
    assert [round(s["lr"], 8) for s in seen[:3]] == [0.001, 0.002, 0.003]  # warmup really ramps


def test_time_budget_is_fitted_once_and_said_before_the_first_line_that_shows_it(tmp_path):
    """A real run with a 3 s budget: the progress lines show "?" until the fit, the fit is said once, before the
    first line that shows its total, and that total never moves (it once read 500, 477, 470, 483, 489 ...)."""
    lines = []
    run = start_run(tiny_cfg(tmp_path, max_steps=100000, warmup_steps=3, time_budget=0.05, eval_every=50,
                             save_every=50, eval_generate=2, eval_max_new_tokens=4), log=lines.append)
    run.fit()
    fits = [i for i, line in enumerate(lines) if line.startswith("time budget 0.05 min: ")]
    assert len(fits) == 1, [line for line in lines if "time budget" in line]
    total = run.max_steps
    assert f": {total} steps fit (" in lines[fits[0]] and run.trainer.schedule.total_steps == total
    progress = [(i, re.match(r"step +(\d+)/(\S+) \|", line)) for i, line in enumerate(lines)]
    progress = [(i, int(m[1]), m[2]) for i, m in progress if m]
    assert all(shown == "?" for i, _, shown in progress if i < fits[0])
    assert {shown for i, _, shown in progress if i > fits[0]} == {str(total)}
    assert [step for _, step, _ in progress if step > 15][:1] == [16]   # training went on after the fit
    # the run ends at its fitted total, or says that the time ran out first
    assert run.trainer.step == total or any(f"reached at step {run.trainer.step} of {total}" in line for line in lines)
    assert ck.latest_state(tmp_path / "run")["step"] == run.trainer.step


def test_loss_is_normalised_by_the_total_token_count_of_the_step(tmp_path):
    """With 2 micro-batches the applied gradient is grad(sum of token losses) / (tokens in both), not the
    mean of the two per-batch means."""
    # no clipping: the applied gradient must be the normalised gradient itself
    cfg = tiny_cfg(tmp_path, grad_accum=2, label_smoothing=0.0, grad_clip=0.0)
    run = start_run(cfg, log=quiet)
    trainer = run.trainer
    reference = start_run(tiny_cfg(tmp_path, grad_accum=2, label_smoothing=0.0, grad_clip=0.0,
                                   out=str(tmp_path / "ref")), log=quiet).trainer
    seen = capture_steps(trainer)
    rec = trainer.train_step()
    batches = [reference._next_batch() for _ in range(2)]   # the same two micro-batches (same seed)
    sums, counts = [], []
    for b in batches:
        loss_sum, n = masked_cross_entropy(reference.model(b["src_ids"], b["tgt_in_ids"]), b["tgt_out_ids"])
        sums.append(loss_sum), counts.append(n)
    assert counts[0] != counts[1]                  # otherwise the two normalisations would coincide
    total = (sums[0] + sums[1]) / (counts[0] + counts[1])
    assert rec["loss"] == pytest.approx(total.item(), rel=1e-5)
    grads = torch.autograd.grad(total, list(reference.model.parameters()), allow_unused=True, retain_graph=True)
    per_batch_mean = torch.autograd.grad((sums[0] / counts[0] + sums[1] / counts[1]) / 2,
                                         list(reference.model.parameters()), allow_unused=True)
    names = [n for n, _ in reference.model.named_parameters()]

    def flat(gs):
        return torch.cat([g.reshape(-1) for g in gs])
    applied = flat(seen[0]["grads"][n] for n in names)
    rel = lambda a, b: (torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b)).item()  # noqa: E731
    assert rel(applied, flat(grads)) < 1e-5
    assert rel(applied, flat(per_batch_mean)) > 1e-3     # the other normalisation really is different


def test_nan_guard_skips_then_aborts_with_last_good_state(tmp_path):
    cfg = tiny_cfg(tmp_path, max_bad_steps=3)
    run = start_run(cfg, log=quiet)
    trainer = run.trainer
    poison = {"on": False}
    trainer.model.embed.register_forward_hook(lambda m, i, out: out * float("nan") if poison["on"] and m.training else out)
    trainer.train_step(), trainer.train_step()
    before = {n: t.clone() for n, t in trainer.model.state_dict().items()}
    opt_before = [s["exp_avg"].clone() for s in trainer.optimizer.state.values()]
    ema_before = {n: t.clone() for n, t in trainer.ema.shadow.items()}
    lr_before = trainer.optimizer.param_groups[0]["lr"]

    poison["on"] = True
    rec = trainer.train_step()
    assert rec["kind"] == "skip" and trainer.step == 2 and trainer.skipped == 1
    for n, t in trainer.model.state_dict().items():        # nothing applied: weights, moments, EMA, schedule
        assert torch.equal(t, before[n]), n
    assert all(torch.equal(a, s["exp_avg"]) for a, s in zip(opt_before, trainer.optimizer.state.values()))
    assert all(torch.equal(t, trainer.ema.shadow[n]) for n, t in ema_before.items())
    assert trainer.optimizer.param_groups[0]["lr"] == lr_before
    assert all(p.grad is None for p in trainer.model.parameters())

    poison["on"] = False
    assert trainer.train_step()["kind"] == "train" and trainer.bad_in_a_row == 0   # the run goes on
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())

    poison["on"] = True
    with pytest.raises(TrainingAborted, match="3 non-finite steps in a row after step 3.*last good state"):
        run.fit()
    state = ck.latest_state(cfg.out)
    assert state["step"] == 3 and state["skipped"] == 4
    for n, t in trainer.model.state_dict().items():
        assert torch.equal(state["model"][n], t) and torch.isfinite(t).all()
    skips = read_log(cfg.out, "skip")
    assert len(skips) == 1 and skips[4]["bad_in_a_row"] == 3  # the log names the attempted step


@pytest.mark.parametrize("select_by", ["nll", "chrf"])
def test_eval_uses_ema_weights_and_keeps_the_best(tmp_path, select_by):
    cfg = tiny_cfg(tmp_path, max_steps=8, eval_every=4, eval_generate=2, eval_max_new_tokens=4, print_samples=1,
                   select_by=select_by)
    lines = []
    run = start_run(cfg, log=lines.append)
    trainer = run.trainer
    run.fit()
    evals = read_log(cfg.out, "eval")
    assert sorted(evals) == [4, 8]
    for rec in evals.values():
        assert {"nll", "perplexity", "accuracy", "top5_accuracy", "bleu", "chrf"} <= set(rec)
        assert rec["perplexity"] == pytest.approx(torch.tensor(rec["nll"]).exp().item(), rel=1e-6)
    assert any("reference:" in line and "model:" in line for line in lines)   # sample answers printed
    saved = ck.read(Path(cfg.out) / ck.MODEL_FILE)
    # the first evaluation with the lowest NLL, or with the highest chrF of the greedy answers
    key = (lambda s: evals[s]["nll"]) if select_by == "nll" else (lambda s: -evals[s]["chrf"])
    best_step = min(sorted(evals), key=key)
    assert saved["step"] == best_step and saved["val_loss"] == pytest.approx(evals[best_step]["nll"])
    assert saved["chrf"] == pytest.approx(evals[best_step]["chrf"])


def test_model_pt_holds_the_ema_weights_not_the_raw_ones(tmp_path):
    cfg = tiny_cfg(tmp_path, max_steps=4, eval_every=4, eval_generate=2, eval_max_new_tokens=4)
    run = start_run(cfg, log=quiet)
    run.fit()                                       # one evaluation, at step 4: it is the best
    saved = ck.read(Path(cfg.out) / ck.MODEL_FILE)
    assert saved["step"] == 4
    for n, t in run.trainer.ema.shadow.items():
        torch.testing.assert_close(saved["model"][n], t)
    assert not torch.equal(saved["model"]["embed.weight"], run.trainer.model.embed.weight)


def test_resume_with_another_selection_starts_a_new_best(tmp_path):
    """best_val holds an NLL or a negated chrF: a resumed run that selects by the other must not compare them."""
    cfg = tiny_cfg(tmp_path, max_steps=4, eval_every=4, save_every=4, eval_generate=2, eval_max_new_tokens=4,
                   select_by="nll")
    first = start_run(cfg, log=quiet)
    first.fit()
    assert first.best_val == pytest.approx(read_log(cfg.out, "eval")[4]["nll"])
    lines = []
    same = start_run(resume_config(cfg.out, {"max_steps": 8}), resume=True, log=lines.append)
    assert same.best_val == first.best_val and not any("selection changed" in line for line in lines)
    same.close()                                    # release the run directory's lock
    other = start_run(resume_config(cfg.out, {"max_steps": 8, "select_by": "chrf"}), resume=True, log=lines.append)
    assert other.best_val == float("inf") and any("selection changed to chrf" in line for line in lines)


# ----------------------------------------------------------------------------------------------------------
# The whole path: data -> model -> loss -> optimiser -> checkpoint -> decoding

def test_overfit_eight_pairs_and_reproduce_them_greedily(tmp_path):
    data = tmp_path / "eight.json"
    write_pairs(data, n=8)
    cfg = TrainConfig(**{**TINY, "data": str(data), "out": str(tmp_path / "run"), "val_fraction": 0.0,
                         "d_model": 64, "n_heads": 4, "d_ff": 128, "batch_tokens": 4096, "max_steps": 200,
                         "warmup_steps": 10, "lr": 1e-2, "min_lr": 1e-3, "label_smoothing": 0.0,
                         "weight_decay": 0.0, "ema_decay": 0.0, "log_every": 10})
    run = start_run(cfg, log=quiet)
    trainer = run.trainer
    run.fit()
    losses = read_log(cfg.out)
    assert losses[1]["loss"] > 4.0 and losses[200]["loss"] < 0.05
    model, tok = ck.load(cfg.out)                      # through the checkpoint, as generate.py would
    srcs = [trainer.train_set[i][0] for i in range(8)]
    out = decode_ids(model, srcs, GenerationConfig(strategy="greedy", max_new_tokens=40))
    assert [tok.decode(ids) for ids, _ in out] == [a for _, a in trainer.train_set.pairs]
    assert all(finished for _, finished in out)         # each answer ends with <eos>


# ----------------------------------------------------------------------------------------------------------
# train.py: flags, a real kill and resume, several processes

# the tiny run of the subprocess tests, as TrainConfig fields and as train.py flags
SUBPROCESS_CFG = dict(corpus="", vocab_size=300, d_model=32, n_heads=2, n_layers=1, d_ff=64, batch_tokens=160, lr=3e-3,
                      min_lr=3e-4, warmup_steps=3, max_steps=24, eval_every=1000, eval_generate=0, log_every=1,
                      save_every=4, ema_decay=0.9, device="cpu")


def run_train(out, data, *extra):
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in SUBPROCESS_CFG.items()]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(REPO / "train.py"), f"--data={data}", f"--out={out}", *flags,
                             *extra], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def test_train_py_flags():
    from train import build_parser, main
    help_text = build_parser().format_help()
    for flag in ("--config", "--data", "--out", "--device", "--max-steps", "--time-budget", "--resume",
                 "--compile", "--precision"):
        assert flag in help_text
    for bad in (["--no-such-flag"], ["--max-steps", "ten"], ["--device", "tpu"], ["--precision", "fp8"],
                ["--warmup-steps", "500", "--max-steps", "100"]):
        try:
            code = main(bad)                   # a bad value of a good flag: one line, exit status 2
        except SystemExit as e:                # argparse's own refusal (unknown flag, wrong type)
            code = e.code
        assert code == 2, bad
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="needs CUDA"):
            start_run(TrainConfig(precision="bf16", device="cpu"))


def test_tiny_data_without_validation_pairs_trains_with_a_warning(tmp_path, capsys):
    """The documented fallback: no validation pairs -> train, say so, and keep the final weights as model.pt."""
    data = tmp_path / "two.json"
    write_pairs(data, n=2)
    from train import main
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in {**SUBPROCESS_CFG, "max_steps": 6, "save_every": 6}.items()]
    assert main([f"--data={data}", f"--out={tmp_path / 'run'}", "--val-fraction=0", *flags]) == 0
    out = capsys.readouterr().out
    assert "warning:" in out and "no validation pairs" in out and "the final weights" in out
    saved = ck.read(tmp_path / "run" / ck.MODEL_FILE)
    assert not read_log(tmp_path / "run", "eval")              # nothing was evaluated
    assert saved["kind"] == "model"


def test_no_training_pairs_is_one_line_and_exit_2(tmp_path, capsys):
    data = tmp_path / "one.json"
    write_pairs(data, n=1)
    from train import main
    # with --val-fraction 0.999999 the single pair's question hash falls in the validation share: no training pair
    code = main([f"--data={data}", f"--out={tmp_path / 'run'}", "--val-fraction=0.999999", "--max-steps=5",
                 "--warmup-steps=1", "--vocab-size=300", "--device=cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("train.py: error: ") and "no training pairs" in err[0] and str(data) in err[0]


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    return write_pairs(tmp_path_factory.mktemp("data") / "pairs.json")


def test_resume_after_sigkill_gives_the_same_losses(tmp_path, data_file):
    """Dropout on, so the RNG state matters too. Run B (a train.py process) is SIGKILLed mid-run, possibly
    mid-write, then resumed; run A never stops. Every step has A's loss, bit for bit."""
    b = run_train(tmp_path / "b", data_file, "--dropout=0.1")
    for line in b.stdout:                                  # kill right after the first checkpoint is written
        if "saved" in line and "state-00000004.pt" in line:
            b.send_signal(signal.SIGKILL)
            break
    b.wait(timeout=60)
    b.stdout.close()
    assert b.returncode == -signal.SIGKILL                 # it really was killed, not finished
    killed_at = max(read_log(tmp_path / "b"))
    # resume and the reference run in this process (same single thread as the subprocess), to save start-up
    resumed = start_run(TrainConfig.preset("small", **{**SUBPROCESS_CFG, "data": str(data_file),
                                                       "out": str(tmp_path / "b"), "dropout": 0.1}),
                        resume=True, log=quiet)
    start = resumed.trainer.step
    assert 4 <= start <= killed_at < 24                    # it resumes from a checkpoint the killed run wrote
    resumed.fit()
    start_run(TrainConfig.preset("small", **{**SUBPROCESS_CFG, "data": str(data_file), "out": str(tmp_path / "a"),
                                             "dropout": 0.1}), log=quiet).fit()
    la, lb = read_log(tmp_path / "a"), read_log(tmp_path / "b")
    assert sorted(lb) == list(range(1, 25))                # no duplicate or missing step after the resume
    assert [lb[s]["loss"] for s in range(1, 25)] == [la[s]["loss"] for s in range(1, 25)]


def _ddp_worker(rank, world, port, cfg):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    try:
        start_run(cfg, log=quiet).fit()
    finally:
        torch.distributed.destroy_process_group()


def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path, data_file):
    """gloo on the CPU: 2 ranks x 1 micro-batch == 1 rank x 2 micro-batches (the same 2 batches per step).
    Tolerance: 1e-4 relative on each step's loss (float32 sums in a different order). The ranks are forked
    from this process (as torchrun would start them, minus the interpreter start-up)."""
    import multiprocessing
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    base = {**SUBPROCESS_CFG, "data": str(data_file), "dropout": 0.0}
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_ddp_worker, args=(r, 2, port, TrainConfig.preset(
        "small", **base, out=str(tmp_path / "two"), grad_accum=1))) for r in range(2)]
    for p in procs:
        p.start()
    try:
        start_run(TrainConfig.preset("small", **base, out=str(tmp_path / "one"), grad_accum=2), log=quiet).fit()
        for p in procs:
            p.join(timeout=120)
    finally:
        # subtle: a rank that hangs (a lost gloo peer) would otherwise outlive the test, and multiprocessing
        # joins its non-daemon children at exit, so pytest itself would never finish.
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
    assert [p.exitcode for p in procs] == [0, 0]
    l1, l2 = read_log(tmp_path / "one"), read_log(tmp_path / "two")
    info = read_log(tmp_path / "one", "info")[0]
    assert read_log(tmp_path / "two", "info")[0]["world_size"] == 2
    # steps that lie wholly inside the first epoch (the last step of an odd epoch is padded differently)
    n = min(24, info["batches_per_epoch"] // 2)
    assert n >= 8
    for s in range(1, n + 1):
        assert l2[s]["loss"] == pytest.approx(l1[s]["loss"], rel=1e-4), s
        assert l2[s]["tokens"] == l1[s]["tokens"]          # the same tokens were seen
    assert l1[n]["loss"] < l1[1]["loss"]                   # and something was learnt


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_cuda_mixed_precision_steps(tmp_path, precision):
    """bf16 autocast needs no scaler; fp16 runs with a GradScaler whose scale is in use. Both learn."""
    run = start_run(tiny_cfg(tmp_path, device="cuda", precision=precision, max_steps=20), log=quiet)
    trainer = run.trainer
    losses = [trainer.train_step()["loss"] for _ in range(12)]
    assert all(map(torch.isfinite, torch.tensor(losses)))
    assert trainer.scaler.is_enabled() == (precision == "fp16")
    if precision == "fp16":
        assert trainer.scaler.get_scale() > 1.0
    assert sum(losses[-3:]) < sum(losses[:3])
    assert next(trainer.model.parameters()).dtype == torch.float32   # master weights stay fp32


# ----------------------------------------------------------------------------------------------------------
# Behaviour a user relies on: evaluation with the EMA weights, the command line's resume and refusal, the time
# budget, and the run log the web page reads

def test_evaluation_scores_the_ema_weights_not_the_raw_ones(tmp_path):
    from minillm.evaluation import teacher_forced_record
    run = start_run(tiny_cfg(tmp_path, ema_decay=0.5, max_steps=12), log=quiet)
    trainer = run.trainer
    for _ in range(6):
        trainer.train_step()

    def nll_of(model):
        return teacher_forced_record(lambda s, t: model(s, t), trainer.val_set.items, trainer.tokenizer.pad_id,
                                     trainer.cfg.batch_tokens, "cpu", trainer.val_chars)["nll"]
    raw = {n: p.clone() for n, p in trainer.model.named_parameters()}
    record = trainer.evaluate()
    assert trainer.model.training                                                       # training mode is back
    trainer.model.eval()
    raw_nll = nll_of(trainer.model)
    with trainer.ema.applied(trainer.model):
        ema_nll = nll_of(trainer.model)
    assert record["nll"] == pytest.approx(ema_nll, rel=1e-6) and abs(raw_nll - ema_nll) > 1e-4
    assert all(torch.equal(p, raw[n]) for n, p in trainer.model.named_parameters())   # raw weights restored


def test_train_py_refuses_to_overwrite_a_run_and_resumes_from_the_command_line(tmp_path, data_file, capsys):
    from train import main
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in {**SUBPROCESS_CFG, "max_steps": 8}.items()]
    out = tmp_path / "run"
    assert main([f"--data={data_file}", f"--out={out}", *flags]) == 0
    before = sorted(os.listdir(out))
    capsys.readouterr()
    assert main([f"--data={data_file}", f"--out={out}", *flags]) == 2          # the same --out again
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already holds a run" in err[0] and "--resume" in err[0]
    assert sorted(os.listdir(out)) == before                                      # nothing touched
    assert main([f"--out={out}", "--resume", "--max-steps=12"]) == 0              # flags come from the saved run
    steps = read_log(out)
    assert sorted(steps) == list(range(1, 13))
    assert ck.latest_state(out)["step"] == 12
    assert ck.latest_state(out)["train_config"]["data"] == str(data_file)


def test_link_latest_points_at_the_finished_run_and_replaces_only_a_link(tmp_path, data_file, capsys):
    """make train passes --link-latest runs/latest: once the run has finished the link names it (relative, so
    the folder can move), a second run moves it, and something that is not a link is refused before training."""
    from train import main
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in {**SUBPROCESS_CFG, "max_steps": 4}.items()]
    link = tmp_path / "latest"
    for name in ("first", "second"):
        assert main([f"--data={data_file}", f"--out={tmp_path / name}", f"--link-latest={link}", *flags]) == 0
        assert link.is_symlink() and os.readlink(link) == name and (link / "model.pt").is_file()
    (tmp_path / "folder").mkdir()
    capsys.readouterr()
    assert main([f"--data={data_file}", f"--out={tmp_path / 'third'}", f"--link-latest={tmp_path / 'folder'}",
                 *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a symbolic link" in err[0] and (tmp_path / "folder").is_dir()
    assert not (tmp_path / "third").exists() and os.readlink(link) == "second"


def test_time_budget_stops_the_run_early_and_says_so(tmp_path):
    lines = []
    run = start_run(tiny_cfg(tmp_path, max_steps=100000, warmup_steps=3, time_budget=0.002), log=lines.append)
    run.fit()                                              # 0.12 s of budget
    assert run.trainer.step < 100000
    # either the clock ran out, or the budget fitted the run to what fits (and the run ended there)
    assert any("time budget of 0.002 min reached at step" in line or "time budget 0.002 min: " in line
               for line in lines)
    assert ck.latest_state(tmp_path / "run")["step"] == run.trainer.step      # the last step is saved


def test_the_run_log_is_what_the_page_reads(tmp_path):
    from minillm.machinery.api import TrainingLog
    cfg = tiny_cfg(tmp_path, max_steps=6, eval_every=3, log_every=2, eval_generate=2, eval_max_new_tokens=4)
    start_run(cfg, log=quiet).fit()
    page = TrainingLog(Path(cfg.out) / runlog.LOG_FILE).read()       # what /api/metrics sends the page
    records = page["records"]
    assert page["skipped_lines"] == 0 and records == runlog.read(Path(cfg.out) / runlog.LOG_FILE)[0]
    assert [r["kind"] for r in records][0] == "info"
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 4, 6]
    assert [r["step"] for r in records if r["kind"] == "eval"] == [3, 6]
    for r in records:
        if r["kind"] == "train":
            assert {"loss", "lr", "tokens", "tokens_per_s", "grad_norm"} <= set(r)
        if r["kind"] == "eval":
            assert {"nll", "perplexity", "accuracy", "cond_gain", "elapsed_s", "bleu", "chrf"} <= set(r)
