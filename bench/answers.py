"""Benchmark: what a user gets from a trained run: greedy answers to its training and validation questions.

Loads a run directory (minillm.checkpoint.load: the EMA weights of model.pt), rebuilds the run's own split of its
data file, answers every question greedily, and prints for each split:

  chrF        mean sentence chrF of each answer against its own reference (sacreBLEU, 0-100)
  distinct    share of distinct answers (1/n when every question gets the same answer)
  max run     the longest run of one token repeated back to back, over all answers, and how many answers
              repeat a token more than 3 times in a row (the "herkes herkes herkes" failure)

and three question/answer pairs of each split. The targets of issue 10 for `make train` on the shipped sample:
training chrF >= 60, distinct >= 0.90, no answer with a token repeated more than 3 times in a row.

    python bench/answers.py runs/small-YYYYMMDD-HHMMSS [--max-new-tokens 64] [--show 3]
"""
import argparse
import os
import pathlib
import sys

import sacrebleu
import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
from minillm import checkpoint as ckpt  # noqa: E402
from minillm.data import clean_pairs, split_pairs  # noqa: E402
from minillm.machinery.datafiles import load_pairs  # noqa: E402
from minillm.generation import GenerationConfig, generate  # noqa: E402
from minillm.metrics import distinct_share  # noqa: E402


def longest_run(ids: list[int]) -> int:
    """Length of the longest run of one id repeated back to back (0 for an empty answer)."""
    best = run = 0
    for i, t in enumerate(ids):
        run = run + 1 if i > 0 and ids[i - 1] == t else 1
        best = max(best, run)
    return best


def report(name: str, pairs, model, tok, max_new_tokens: int, show: int) -> dict:
    questions = [q for q, _ in pairs]
    answers = generate(model, tok, questions, GenerationConfig(strategy="greedy", max_new_tokens=max_new_tokens))
    chrf = sacrebleu.metrics.CHRF()
    scores = [chrf.sentence_score(a.text, [ref]).score for a, (_, ref) in zip(answers, pairs)]
    runs = [longest_run(a.ids) for a in answers]
    out = {"n": len(pairs), "chrf": sum(scores) / len(scores), "distinct": distinct_share([a.text for a in answers]),
           "max_run": max(runs), "over_3": sum(r > 3 for r in runs)}
    print(f"{name}: {out['n']} questions, mean chrF {out['chrf']:.1f}, distinct {out['distinct']:.2f}, longest "
          f"repeated-token run {out['max_run']}, answers with a run > 3: {out['over_3']}")
    for a, (q, ref), s in list(zip(answers, pairs, scores))[:show]:
        print(f"  Q: {q}\n  reference: {ref}\n  model:     {a.text}   (chrF {s:.1f})")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a run directory written by train.py (its model.pt), or one of its .pt files")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--show", type=int, default=3, help="question/answer pairs printed per split")
    p.add_argument("--threads", type=int, default=0)
    args = p.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    target = pathlib.Path(args.run)
    run = target.parent if target.is_file() else target
    try:
        model, tok = ckpt.load(target)
        saved = ckpt.read(target if target.is_file() else run / ckpt.MODEL_FILE)
    except (FileNotFoundError, ckpt.CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    tc = saved.get("train_config") or {}
    data = tc.get("data")
    if not data or not pathlib.Path(data).is_file():
        print(f"error: {run}: the run's data file {data!r} is not found (run from the directory train.py ran in)",
              file=sys.stderr)
        return 2
    pairs, _ = clean_pairs(load_pairs(data))
    splits = split_pairs(pairs, tc.get("val_fraction", 0.1), 0.0)
    print(f"{target} (step {saved.get('step')}), data {data}; load average {os.getloadavg()[0]:.2f}")
    report("training questions", splits["train"], model, tok, args.max_new_tokens, args.show)
    if splits["val"]:
        report("validation questions (never trained on)", splits["val"], model, tok, args.max_new_tokens, args.show)
    return 0


if __name__ == "__main__":
    sys.exit(main())
