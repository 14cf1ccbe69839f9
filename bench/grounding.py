"""Benchmark: does a trained run answer from the law? Questions about articles its data never asks about.

For every article of the Constitution (data/anayasa.json) whose number no question of the run's data file names
(both splits: the model never saw a question about it), ask "Anayasanın N. maddesi neyi düzenler?" greedily and
score each answer:

  names N     the first article the answer names is N ("Anayasanın 44. maddesi ...")
  from N      the answer's content comes from article N's heading and text: of its content words (their first 5
              characters, by minillm.retrieval.terms, that are not in the question and are in at most a tenth of the
              articles), at least 3 and at least 60 % occur in article N, N holds more of them than any other
              article does, and the answer is not a loop (no word more than twice among its content words)
  right       both (for an article in force); for a repealed one, the answer says it is repealed ("mülga",
              "yürürlükten kaldırıl")

then the run's own questions: mean chrF of the greedy answers against their references, training and validation.
Each checkpoint named is measured the same way in the same run (a model trained without retrieval as the peer;
--no-retrieval also scores the run's model without its passages).

    python bench/grounding.py runs/make-train [--peer runs/make-train-noretrieval] [--no-retrieval] [--show 5]

The issue-19 target for `make train`: right >= 70 % on the articles in force, the training questions still
answered (chrF as before retrieval).
"""
import argparse
import json
import os
import pathlib
import re
import sys
from collections import Counter

import sacrebleu
import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
from minillm import checkpoint as ckpt  # noqa: E402
from minillm.corpus import article_references  # noqa: E402
from minillm.data import clean_pairs, split_pairs, turkish_lower  # noqa: E402
from minillm.generation import GenerationConfig, generate  # noqa: E402
from minillm.machinery.corpusfile import read_articles  # noqa: E402
from minillm.machinery.datafiles import load_pairs  # noqa: E402
from minillm.retrieval import terms  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
QUESTION = "Anayasanın {n}. maddesi neyi düzenler?"
REPEALED = re.compile(r"mülga|yürürlükten kaldırıl")
PREFIX = 5          # characters of each word compared (fixed here, whatever retrieval uses)


def article_terms(records) -> tuple[dict[int, set[str]], set[str]]:
    """Each article's set of terms (heading + text), and the common terms (in more than a tenth of them)."""
    sets = {r["madde"]: set(terms(r["baslik"] + " " + r["metin"], PREFIX)) for r in records}
    df = Counter(t for s in sets.values() for t in s)
    return sets, {t for t, n in df.items() if n > len(sets) / 10}


def score_answer(n: int, answer: str, sets: dict, common: set, repealed: bool) -> dict:
    named = article_references(answer)
    names = bool(named) and named[0] == n
    skip = set(terms(QUESTION.format(n=n), PREFIX)) | common | {str(n)}
    content = [t for t in terms(answer, PREFIX) if t not in skip]         # with repeats, in order
    in_n = sum(t in sets[n] for t in content)
    share = in_n / len(content) if content else 0.0
    best_other = max((sum(t in s for t in content) for m, s in sets.items() if m != n), default=0)
    loop = max(Counter(content).values(), default=0) > 2
    from_n = len(content) >= 3 and share >= 0.6 and in_n > best_other and not loop
    says_repealed = bool(REPEALED.search(turkish_lower(answer)))
    right = says_repealed if repealed else names and from_n
    return {"names": names, "from": from_n, "share": share, "right": right}


def measure(name: str, target, retrieval: bool, records, unseen, pairs_by_split, show: int, ngram: int = 0) -> dict:
    model, tok = ckpt.load(target, retrieval=retrieval)
    config = GenerationConfig(strategy="greedy", max_new_tokens=min(96, model.cfg.max_len), no_repeat_ngram_size=ngram)
    sets, common = article_terms(records)
    by_number = {r["madde"]: r for r in records}
    answers = generate(model, tok, [QUESTION.format(n=n) for n in unseen], config)
    scores = [score_answer(n, a.text, sets, common, by_number[n]["mulga"]) for n, a in zip(unseen, answers)]
    in_force = [s for n, s in zip(unseen, scores) if not by_number[n]["mulga"]]
    repealed = [s for n, s in zip(unseen, scores) if by_number[n]["mulga"]]
    out = {"in_force": len(in_force), "names": sum(s["names"] for s in in_force) / max(1, len(in_force)),
           "from": sum(s["from"] for s in in_force) / max(1, len(in_force)),
           "right": sum(s["right"] for s in in_force) / max(1, len(in_force)),
           "repealed": len(repealed), "repealed_right": sum(s["right"] for s in repealed) / max(1, len(repealed))}
    chrf = sacrebleu.metrics.CHRF()
    for split, pairs in pairs_by_split.items():
        got = generate(model, tok, [q for q, _ in pairs], config)
        out[f"chrf_{split}"] = sum(chrf.sentence_score(a.text, [r]).score for a, (_, r) in zip(got, pairs)) / len(pairs)
    print(f"{name:38s} {out['in_force']:4d} {100 * out['names']:7.1f} {100 * out['from']:7.1f} "
          f"{100 * out['right']:7.1f} {out['repealed']:5d} {100 * out['repealed_right']:7.1f} "
          f"{out.get('chrf_train', float('nan')):7.1f} {out.get('chrf_val', float('nan')):7.1f}", flush=True)
    for n, a, s in list(zip(unseen, answers, scores))[:show]:
        print(f"    md. {n}: {a.text[:150]}  [names {s['names']}, share {s['share']:.2f}, right {s['right']}]")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", help="a run directory trained with retrieval (train.py's default)")
    p.add_argument("--peer", action="append", default=[], help="another run to measure the same way (repeatable)")
    p.add_argument("--no-retrieval", action="store_true", help="also score the run's model without its passages")
    p.add_argument("--articles", default=str(ROOT / "data" / "anayasa.json"), help="the Constitution's articles")
    p.add_argument("--show", type=int, default=3, help="answers printed per model")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--no-repeat-ngram", type=int, default=0, help="greedy decoding's no_repeat_ngram_size (0 = off)")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    saved = ckpt.read(pathlib.Path(args.run) / ckpt.MODEL_FILE)
    tc = saved.get("train_config") or {}
    pairs, _ = clean_pairs(load_pairs(tc["data"]))
    splits = split_pairs(pairs, tc.get("val_fraction", 0.1), 0.0)
    named = {n for q, _ in pairs for n in article_references(q)}
    records = read_articles(args.articles)
    unseen = [r["madde"] for r in records if r["madde"] not in named]
    print(f"{args.run}: data {tc['data']}, {len(unseen)} articles its questions never name "
          f"({sum(not r['mulga'] for r in records if r['madde'] in unseen)} in force); load average "
          f"{os.getloadavg()[0]:.2f}")
    print(f"{'model':38s} {'n':>4s} {'names N':>7s} {'from N':>7s} {'right':>7s} {'n rep':>5s} {'rep ok':>7s} "
          f"{'chrF tr':>7s} {'chrF val':>7s}")
    split_pairs_ = {"train": splits["train"], "val": splits["val"]}
    ngram = args.no_repeat_ngram
    results = {"run": measure(f"{args.run}", args.run, True, records, unseen, split_pairs_, args.show, ngram)}
    if args.no_retrieval:
        results["run_no_retrieval"] = measure(f"{args.run} --no-retrieval", args.run, False, records, unseen,
                                              split_pairs_, args.show, ngram)
    for peer in args.peer:
        results[peer] = measure(peer, peer, True, records, unseen, split_pairs_, args.show, ngram)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
