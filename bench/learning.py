"""Benchmark: how much minillm learns per step on the law data, against a same-size BART and two baselines.

Everything is measured in one run, on one split, with one tokenizer and the same batches:

  minillm     train.py's run (minillm.machinery.run) with the `small` preset (or --set FIELD=VALUE overrides), evaluated every
              --eval-every steps (with the EMA weights when --set ema_decay=... turns an EMA on)
  BART        (only when `transformers` is importable; never required) Hugging Face's BartForConditionalGeneration
              with minillm's sizes, vocabulary and dropout, trained on the IDENTICAL batches (the same
              TokenBatchSampler, seed and order) with a plain recipe: AdamW (lr 1e-3, weight decay 0.01),
              get_linear_schedule_with_warmup, gradient clipping at 1.0, no label smoothing, no EMA
  trigram     an interpolated Kneser–Ney trigram of the answers (minillm.machinery.baselines), which never sees the question
  neighbour   the answer of the most similar training question (minillm.machinery.baselines)

Per evaluation point, on all validation pairs: NLL per target token (incl. <eos>), NLL per answer character
(comparable across vocabularies), perplexity, token accuracy, the conditioning gain (NLL with each question
swapped for another pair's minus NLL with the true question: does the model read the question?), and greedy
BLEU/chrF with the share of distinct greedy answers. Ratios minillm/BART are printed at each common step.

    python bench/learning.py                       # 600 steps, the law split in ../shared; BART if importable
    python bench/learning.py --steps 4000 --time-budget 30 --no-peer     # the 30-CPU-minute curve
    python bench/learning.py --set lr=1e-3 --set label_smoothing=0       # try a recipe change

The law split is ../shared/data/turkish-law-chatbot/test.json (the real 1,500-pair test split of
Renicames/turkish-law-chatbot) cut 90/10 by question hash as train.py cuts it; without that file the
benchmark prints why and exits 0.
"""
import argparse
import dataclasses
import json
import math
import os
import pathlib
import shutil
import sys
import tempfile
import time

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
from minillm.batching import TokenBatchSampler, collate, pad  # noqa: E402
from minillm.evaluation import answers_record, teacher_forced_record  # noqa: E402
from minillm.losses import masked_cross_entropy  # noqa: E402
from minillm.machinery import runlog  # noqa: E402
from minillm.machinery.baselines import KneserNeyTrigram, nearest_neighbour_answers  # noqa: E402
from minillm.machinery.run import start_run  # noqa: E402
from minillm.metrics import distinct_share, text_scores  # noqa: E402
from minillm.recipe import TrainConfig  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
LAW = ROOT.parent / "shared" / "data" / "turkish-law-chatbot" / "test.json"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(LAW), help="question-answer file (default: the law split in ../shared)")
    p.add_argument("--steps", type=int, default=600, help="optimiser steps for each model (default 600)")
    p.add_argument("--eval-every", type=int, default=100, help="steps between evaluations (default 100)")
    p.add_argument("--time-budget", type=float, default=0.0, help="minutes for minillm (0 = none), as train.py")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--no-peer", action="store_true", help="skip BART even when transformers is importable")
    p.add_argument("--peer-lr", type=float, default=1e-3, help="BART's peak learning rate (default 1e-3)")
    p.add_argument("--peer-warmup", type=int, default=None,
                   help="BART's warmup steps (default: 10%% of --steps; 30 made the post-norm BART diverge at 1e-3)")
    p.add_argument("--only", choices=["minillm", "bart"], default=None, help="train only one of the two models")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="a TrainConfig field for minillm, e.g. --set lr=1e-3 (repeatable)")
    p.add_argument("--out", default=None, help="minillm's run directory (default: a temporary one)")
    p.add_argument("--json", default=None, help="also write every figure to this JSON file")
    return p.parse_args(argv)


def overrides(pairs: list[str]) -> dict:
    """--set FIELD=VALUE strings -> {field: value} typed like TrainConfig's defaults."""
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    out = {}
    for item in pairs:
        name, sep, value = item.partition("=")
        if not sep or name not in fields:
            raise SystemExit(f"--set {item!r}: expected FIELD=VALUE with a TrainConfig field; known: {sorted(fields)}")
        if value.lower() in ("true", "false"):
            out[name] = value.lower() == "true"
        else:
            for kind in (int, float, str):
                try:
                    out[name] = kind(value)
                    break
                except ValueError:
                    continue
    return out


# ----------------------------------------------------------------------------------------------------------
# The peer: a Hugging Face BART of the same size on the same batches

def make_bart(trainer):
    from transformers import BartConfig, BartForConditionalGeneration
    mc, tok = trainer.model.cfg, trainer.tokenizer
    cfg = BartConfig(vocab_size=mc.vocab_size, d_model=mc.d_model, encoder_layers=mc.n_encoder_layers,
                     decoder_layers=mc.n_decoder_layers, encoder_attention_heads=mc.n_heads,
                     decoder_attention_heads=mc.n_heads, encoder_ffn_dim=mc.d_ff, decoder_ffn_dim=mc.d_ff,
                     activation_function="gelu", dropout=mc.dropout, attention_dropout=0.0, activation_dropout=0.0,
                     max_position_embeddings=mc.max_len, pad_token_id=tok.pad_id, bos_token_id=tok.bos_id,
                     eos_token_id=tok.eos_id, decoder_start_token_id=tok.bos_id, forced_bos_token_id=None,
                     forced_eos_token_id=None, tie_word_embeddings=True)
    return BartForConditionalGeneration(cfg)


def bart_logits(model, pad_id):
    def fn(src_ids, tgt_in_ids):
        return model(input_ids=src_ids, attention_mask=src_ids.ne(pad_id), decoder_input_ids=tgt_in_ids,
                     decoder_attention_mask=tgt_in_ids.ne(pad_id)).logits                 # (B, T, V)
    return fn


@torch.no_grad()
def bart_greedy(model, srcs: list[list[int]], tok, max_new_tokens: int, batch: int = 32) -> list[str]:
    """Greedy answers, one argmax at a time (no cache: the peer's decoding speed is not what is measured)."""
    answers = []
    for start in range(0, len(srcs), batch):
        chunk = srcs[start:start + batch]
        src = pad(chunk, tok.pad_id)                                                          # (B, S)
        mask = src.ne(tok.pad_id)
        enc = model.get_encoder()(input_ids=src, attention_mask=mask)
        out = torch.full((len(chunk), 1), tok.bos_id, dtype=torch.long)                       # (B, 1)
        done = torch.zeros(len(chunk), dtype=torch.bool)
        for _ in range(max_new_tokens):
            logits = model(encoder_outputs=enc, attention_mask=mask, decoder_input_ids=out).logits[:, -1]  # (B, V)
            nxt = logits.argmax(-1).masked_fill(done, tok.pad_id)
            out = torch.cat([out, nxt[:, None]], 1)
            done |= nxt.eq(tok.eos_id)
            if done.all():
                break
        for row in out[:, 1:].tolist():
            ids = []
            for t in row:
                if t in (tok.eos_id, tok.pad_id):
                    break
                ids.append(t)
            answers.append(tok.decode(ids))
    return answers


def evaluate_peer(model, trainer, step: int, t_wall: float, t_cpu: float) -> dict:
    pad_id, items = trainer.tokenizer.pad_id, trainer.val_set.items
    model.eval()
    record = teacher_forced_record(bart_logits(model, pad_id), items, pad_id, trainer.cfg.batch_tokens, "cpu",
                                   trainer.val_chars)
    n = min(trainer.cfg.eval_generate, len(items))
    hyps = bart_greedy(model, [items[i][0] for i in range(n)], trainer.tokenizer, trainer.cfg.eval_max_new_tokens)
    model.train()
    return {"step": step, "elapsed_s": t_wall, "cpu_s": t_cpu, **record,
            **answers_record(hyps, [a for _, a in trainer.val_set.pairs[:n]])}


def train_peer(trainer, steps: int, eval_every: int, lr: float, warmup: int) -> list[dict]:
    from transformers import get_linear_schedule_with_warmup
    cfg, pad_id = trainer.cfg, trainer.tokenizer.pad_id
    torch.manual_seed(cfg.seed)
    model = make_bart(trainer)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = get_linear_schedule_with_warmup(opt, warmup, steps)
    # the same sampler, seed and epoch order as Trainer's batch stream: the identical batches
    sampler = TokenBatchSampler(trainer.train_set.lengths, cfg.batch_tokens, seed=cfg.seed)
    it, records = iter(sampler), []
    t0, c0 = time.perf_counter(), time.process_time()
    for step in range(1, steps + 1):
        try:
            indices = next(it)
        except StopIteration:
            it = iter(sampler)
            indices = next(it)
        b = collate([trainer.train_set[i] for i in indices], pad_id)
        logits = bart_logits(model, pad_id)(b["src_ids"], b["tgt_in_ids"])
        loss_sum, n = masked_cross_entropy(logits, b["tgt_out_ids"], pad_id)
        (loss_sum / n).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if step % eval_every == 0 or step == steps:
            rec = evaluate_peer(model, trainer, step, time.perf_counter() - t0, time.process_time() - c0)
            records.append(rec)
            print(row("BART", rec), flush=True)
    return records


# ----------------------------------------------------------------------------------------------------------

HEADER = (f"{'model':10s} {'step':>5s} {'min':>5s} {'cpu min':>7s} {'NLL/tok':>7s} {'NLL/char':>8s} {'ppl':>7s} "
          f"{'acc':>5s} {'gain':>6s} {'BLEU':>5s} {'chrF':>5s} {'distinct':>8s}")


def row(name: str, r: dict) -> str:
    def f(key, width, fmt, scale=1.0):
        v = r.get(key)
        return format(v / scale if scale != 1.0 else v, f">{width}{fmt}") if isinstance(v, (int, float)) else "—".rjust(width)
    return (f"{name:10s} {f('step', 5, 'd')} {f('elapsed_s', 5, '.1f', 60)} {f('cpu_s', 7, '.1f', 60)} "
            f"{f('nll', 7, '.3f')} {f('nll_per_char', 8, '.3f')} {f('perplexity', 7, '.1f')} {f('accuracy', 5, '.3f')} "
            f"{f('cond_gain', 6, '.3f')} {f('bleu', 5, '.1f')} {f('chrf', 5, '.1f')} {f('distinct', 8, '.2f')}")


def main(argv=None) -> int:
    args = parse_args(argv)
    if not pathlib.Path(args.data).is_file():
        print(f"skipped: {args.data} not found (the law split lives in ../shared/data; see its README)")
        return 0
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f} on "
          f"{os.cpu_count()} cores; torch {torch.__version__}, {torch.get_num_threads()} threads")
    out = args.out or tempfile.mkdtemp(prefix="minillm-learning-")
    try:
        return run(args, out)
    finally:
        if args.out is None:                      # the run directory was ours: leave nothing behind
            shutil.rmtree(out, ignore_errors=True)


def run(args, out: str) -> int:
    cfg = TrainConfig.preset("small", **{
        "data": args.data, "out": out, "val_fraction": 0.1, "vocab_size": 8000, "max_steps": args.steps,
        "eval_every": args.eval_every, "eval_generate": 10 ** 6, "eval_max_new_tokens": 48, "print_samples": 0,
        "save_every": 10 ** 6, "log_every": 10 ** 6, "time_budget": args.time_budget, "threads": args.threads,
        **overrides(args.set)})
    # the trainer's own progress lines: only its evaluations and time-budget decisions, as they happen
    if cfg.grad_accum != 1:
        raise SystemExit("bench/learning.py: --set grad_accum must stay 1 (the peer is fed one batch per step)")
    run = start_run(cfg, log=lambda *a, **k: print("  ", *a, flush=True) if a and str(a[0]).lstrip().startswith(
        ("eval step", "time budget")) else None)
    trainer = run.trainer
    if trainer.val_set is None or len(trainer.val_set) < 2 or cfg.eval_generate < 1:
        raise SystemExit(f"bench/learning.py: needs at least 2 validation pairs and --set eval_generate >= 1 "
                         f"(got {len(trainer.val_set) if trainer.val_set else 0} pairs, eval_generate "
                         f"{cfg.eval_generate})")
    print(f"data {args.data}: train {len(trainer.train_set)}, val {len(trainer.val_set)} pairs; vocabulary "
          f"{trainer.tokenizer.vocab_size}; minillm {trainer.model.num_params() / 1e6:.2f}M parameters; "
          f"{cfg.batch_tokens} tokens per batch, seed {cfg.seed}")
    print("minillm recipe: " + ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(cfg).items()
                                        if k in ("lr", "min_lr", "warmup_steps", "decay", "weight_decay", "beta2",
                                                 "label_smoothing", "ema_decay", "dropout", "batch_tokens")))

    # --- baselines on the same split and tokens
    tok, val = trainer.tokenizer, trainer.val_set
    kn = KneserNeyTrigram([out_ids for _, _, out_ids in trainer.train_set.items], tok.vocab_size, tok.bos_id)
    kn_scores = kn.score([out_ids for _, _, out_ids in val.items])
    trigram = {"nll": kn_scores["nll"], "perplexity": kn_scores["perplexity"], "accuracy": kn_scores["accuracy"],
               "nll_per_char": kn_scores["nll_sum"] / trainer.val_chars, "cond_gain": 0.0}
    nn_answers = nearest_neighbour_answers(trainer.train_set.pairs, [q for q, _ in val.pairs], tok)
    nn_text = text_scores(nn_answers, [a for _, a in val.pairs])
    neighbour = {"bleu": nn_text["bleu"], "chrf": nn_text["chrf"], "distinct": distinct_share(nn_answers)}

    print("\n" + HEADER)
    print(row("trigram", trigram))
    print(row("neighbour", neighbour), flush=True)
    mine = []
    if args.only != "bart":
        run.fit()
        mine = [r for r in runlog.read(pathlib.Path(out) / runlog.LOG_FILE)[0] if r.get("kind") == "eval"]
        for r in mine:
            print(row("minillm", r), flush=True)
    results = {"minillm": mine, "trigram": trigram, "neighbour": neighbour, "config": dataclasses.asdict(cfg)}

    peer = None
    if not args.no_peer and args.only != "minillm":
        try:
            import transformers  # noqa: F401
        except ImportError:
            print("BART: transformers is not importable; peer skipped (pip install transformers to include it)")
        else:
            warmup = args.peer_warmup if args.peer_warmup is not None else max(1, args.steps // 10)
            print(f"BART recipe: AdamW lr={args.peer_lr}, weight_decay=0.01, linear warmup {warmup} steps then "
                  f"linear decay to 0 at step {args.steps}, clip 1.0, dropout {trainer.model.cfg.dropout}")
            peer = train_peer(trainer, args.steps, args.eval_every, args.peer_lr, warmup)
            results["bart"] = peer
    if peer:
        print("\nminillm / BART at the same step (NLL ratio <= 1.00: minillm learns at least as much per step)")
        by_step = {r["step"]: r for r in peer}
        for r in mine:
            p = by_step.get(r["step"])
            if p:
                print(f"  step {r['step']:5d}: NLL ratio {r['nll'] / p['nll']:.3f}, ppl {r['perplexity']:.1f} vs "
                      f"{p['perplexity']:.1f}, gain {r['cond_gain']:.3f} vs {p['cond_gain']:.3f}, chrF "
                      f"{r['chrf']:.1f} vs {p['chrf']:.1f}")
    if not mine:
        return 0
    last = mine[-1]
    print(f"\nminillm at step {last['step']}: ppl {last['perplexity']:.1f} vs trigram {trigram['perplexity']:.1f} "
          f"(ratio {last['perplexity'] / trigram['perplexity']:.2f}); chrF {last['chrf']:.1f} vs neighbour "
          f"{neighbour['chrf']:.1f}; gain {last['cond_gain']:.3f} nats/token; distinct {last['distinct']:.2f}")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
