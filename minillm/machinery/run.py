"""A training run from a TrainConfig: the set-up, in the order things are built, and the resume.

    run = start_run(TrainConfig(data="data/sample.json", out="runs/x"))   # or resume=True
    run.fit()                                                               # model.pt = the best evaluation

`start_run` reads top to bottom in the order things are built: processes and device -> run directory ->
data -> tokenizer -> datasets -> model -> Trainer (optimiser, schedule, EMA) -> the saved state on resume.
The algorithm itself is minillm.training.Trainer.train_step; this module only drives it.

The loop, and how a run ends (Ctrl-C, a divergence, a full disk), is minillm.machinery.loop.Run.
"""
from __future__ import annotations

import time

import torch
import torch.distributed as dist

from minillm.batching import Seq2SeqDataset
from minillm.data import clean_pairs, split_pairs
from minillm.model import ModelConfig, Seq2Seq
from minillm.recipe import TrainConfig
from minillm.tokenizer import BPETokenizer
from minillm.training import Trainer
from minillm.machinery import checkpoint as ckpt
from minillm.machinery import corpusfile
from minillm.machinery.datafiles import load_pairs
from minillm.machinery.cli import StopRequests, one_line
from minillm.machinery.device import resolve_device, resolve_precision, setup_distributed
from minillm.machinery.loop import Run, RunInterrupted, TrainingAborted
from minillm.machinery.progress import choose_threads
from minillm.machinery.rundir import RunDirectory

__all__ = ["Run", "RunInterrupted", "TrainingAborted", "describe_run", "start_run"]


def describe_run(cfg: TrainConfig, preset: str, resume: bool) -> str:
    """The first line of a run: what it will do, where, for how long, and how to stop it."""
    length = f"{cfg.max_steps} steps" + (f" or {cfg.time_budget:g} min, whichever comes first"
                                         if cfg.time_budget > 0 else "")
    what = (f"resuming {cfg.out} (up to {length})" if resume else
            f"training the {preset} preset on {cfg.data}{' with ' + cfg.corpus if cfg.corpus else ''} into "
            f"{cfg.out}: {length}")
    return f"{what}; Ctrl-C stops after the current step and saves it (then: --out {cfg.out} --resume)"


def start_run(cfg: TrainConfig, resume: bool = False, log=print, preset: str | None = None, notes=()) -> Run:
    """Build everything a run needs, in order, and return it ready to fit(). Everything that can be checked
    without writing is checked first; a fresh run that still fails, or is interrupted, removes what it wrote.
    Ctrl-C (or SIGTERM) here stops at once: RunInterrupted. preset: log describe_run's line first, then `notes`."""
    try:
        with StopRequests(at_once=True):
            return _start(cfg, resume, log, preset, notes)
    except KeyboardInterrupt:
        raise RunInterrupted(f"interrupted while setting up, before the first step; "
                             f"{cfg.out + ' is as it was' if resume else 'nothing was kept'}") from None


def _start(cfg: TrainConfig, resume: bool, log, preset, notes) -> Run:
    # --- processes and device
    rank, world, local_rank = setup_distributed()
    log = (lambda *a, **k: None) if rank != 0 else log
    for line in ([describe_run(cfg, preset, resume)] if preset else []) + list(notes):
        log(line)
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


def _build(cfg, resume, log, run_dir, splits, sizes, rank, world, device, precision, articles) -> Run:
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
    try:
        model = Seq2Seq(model_cfg).to(device)
    except RuntimeError as e:   # "DefaultCPUAllocator: can't allocate memory" (a --d-model of 10**6), CUDA's OOM
        raise ValueError(f"the model does not fit in memory ({one_line(e, 1)}); lower --d-model, --d-ff, "
                         f"--n-layers, --vocab-size or --max-src-len / --max-tgt-len") from None
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
        f"x {world} processes; MFU against a peak of {run.peak / 1e12:.3f} TFLOP/s ({run.peak_source})")
    return run
