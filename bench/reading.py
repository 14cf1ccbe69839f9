"""Benchmark: does reading the law help? Models trained at equal steps on the law split, with and without retrieval.

Every configuration is train.py's run (minillm.machinery.run) of the `small` preset on the law split in ../shared
(1,353 training, 147 validation pairs, cut as train.py cuts them), for the same --steps, each in its own process
on one thread (--jobs of them at a time). Then model.pt (the best evaluation by greedy chrF, as train.py keeps it)
answers all 147 validation questions greedily (--max-new-tokens), and the table gives

  chrF, BLEU        against the references (sacreBLEU)
  right article     of the validation pairs whose reference cites a Constitution article, the share whose answer
                    cites the same one first
  verbatim          the share of answers that are, word for word, some training answer
  gain              the conditioning gain at the last evaluation (nats/token; 0 = the question is not read)

for these configurations (--only picks some):

  no-retrieval      the recipe before retrieval: the question alone, no copy head (--corpus "" --no-copy)
  retrieval         the base preset's settings: the question, then an article and a training answer, copy head
  no-copy           retrieval without the copy head (minillm.copying): what the head adds
  articles-2 / pairs-0 / pairs-2     the number of passages (k), one kind at a time
  oracle            retrieval whose first article is the one the reference answer cites (training and
                    validation alike): the ceiling of what better retrieval could give

beside the baselines that need no training (bench/retrieval.py): the top article passage, the top training
answer, the nearest neighbour, and the oracle article's text.

    python bench/reading.py --steps 2000 --jobs 2                # about an hour on 2 cores
    python bench/reading.py --steps 300 --only retrieval         # a quick look
"""
import argparse
import dataclasses
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

import sacrebleu
import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from minillm import checkpoint as ckpt  # noqa: E402
from minillm.corpus import article_references, same_text  # noqa: E402
from minillm.data import clean_pairs, split_pairs  # noqa: E402
from minillm.generation import GenerationConfig, generate  # noqa: E402
from minillm.machinery import corpusfile, runlog  # noqa: E402
from minillm.machinery.datafiles import load_pairs  # noqa: E402
from minillm.machinery.run import start_run  # noqa: E402
from minillm.metrics import distinct_share  # noqa: E402
from minillm.retrieval import Hit, Retriever  # noqa: E402
from minillm.recipe import TrainConfig  # noqa: E402
from retrieval import ARTICLES, LAW, right_article_rate  # noqa: E402

NGRAMS = (0, 3)     # no_repeat_ngram_size of the final greedy answers: off, and 3
# The retrieval settings every reading configuration starts from: the base preset's (bench/README.md says why).
READ = dict(retrieve_articles=1, retrieve_pairs=1, window_words=40, window_stride=30, max_src_len=192)
CONFIGS = {
    "no-retrieval": dict(corpus="", copy=False),
    "retrieval": dict(READ),
    "no-copy": dict(READ, copy=False),
    "articles-2": dict(READ, retrieve_articles=2, max_src_len=256),
    "pairs-0": dict(READ, retrieve_pairs=0),
    "pairs-2": dict(READ, retrieve_pairs=2, max_src_len=256),
    "oracle": dict(READ),
}


class OracleRetriever(Retriever):
    """A Retriever whose first article is the one the reference answer cites (looked up by the question)."""

    def __init__(self, base: Retriever, cited: dict[str, int]):
        self.__dict__.update(base.__dict__)
        self.cited = cited

    def search(self, question, exclude=None):
        hits = super().search(question, exclude)
        number = self.cited.get(question)
        if number is None or number not in self.first_window:
            return hits
        oracle = Hit(self.law[self.first_window[number]], 0.0, "oracle")
        law = [oracle] + [h for h in hits if h.passage.article is not None and h.passage.id != oracle.passage.id]
        return law[:self.articles] + [h for h in hits if h.passage.article is None]


def run_one(name: str, steps: int, data: str, out: str, max_new_tokens: int) -> dict:
    """Train configuration `name` in `out` and score its model.pt on every validation question."""
    torch.set_num_threads(1)
    cfg = TrainConfig.preset("small", **{**dict(data=data, out=out, corpus=str(ARTICLES), vocab_size=8000,
                                                max_steps=steps, warmup_steps=max(1, steps // 10),
                                                eval_every=max(1, steps // 5), eval_generate=48, print_samples=0,
                                                save_every=10 ** 6, log_every=10 ** 6, threads=1),
                                             **CONFIGS[name]})
    pairs, _ = clean_pairs(load_pairs(data))
    cited = {q: article_references(a)[0] for q, a in pairs if article_references(a)}
    oracle = None
    if name == "oracle":                   # the run's own retriever, wrapped; and the same one for the answers
        real = corpusfile.run_retriever

        def wrapped(*args, **kwargs):
            nonlocal oracle
            retriever, record = real(*args, **kwargs)
            oracle = OracleRetriever(retriever, cited)
            return oracle, record
        corpusfile.run_retriever = wrapped
    t0 = time.perf_counter()
    run = start_run(cfg, log=lambda *a, **k: None)
    run.fit()
    seconds, cpu = time.perf_counter() - t0, time.process_time()
    evals = [r for r in runlog.read(pathlib.Path(out) / runlog.LOG_FILE)[0] if r.get("kind") == "eval"]
    model, tok = ckpt.load(out)
    if oracle is not None:
        model.retriever = oracle
    val = split_pairs(pairs, cfg.val_fraction, 0.0)["val"]
    train = split_pairs(pairs, cfg.val_fraction, 0.0)["train"]
    refs = [a for _, a in val]
    seen = {same_text(a) for _, a in train}
    result = {"name": name, "steps": run.trainer.step, "wall_s": seconds, "cpu_s": cpu,
              "gain": evals[-1].get("cond_gain") if evals else None, "evals": evals, "config": dataclasses.asdict(cfg)}
    for ngram in NGRAMS:             # greedy as it is, and with no 3-gram repeated (Paulus et al. 2018)
        answers = [a.text for a in generate(model, tok, [q for q, _ in val], GenerationConfig(
            strategy="greedy", max_new_tokens=max_new_tokens, no_repeat_ngram_size=ngram))]
        rate, n_cited = right_article_rate(answers, refs)
        result[f"ngram{ngram}"] = {
            "chrf": sacrebleu.corpus_chrf(answers, [refs]).score, "bleu": sacrebleu.corpus_bleu(answers, [refs]).score,
            "right_article": rate, "n_cited": n_cited, "distinct": distinct_share(answers),
            "verbatim": sum(same_text(a) in seen for a in answers) / len(answers), "answers": answers}
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(LAW))
    p.add_argument("--steps", type=int, default=2000, help="optimiser steps for every configuration")
    p.add_argument("--jobs", type=int, default=2, help="configurations trained at once, one thread each")
    p.add_argument("--only", action="append", choices=list(CONFIGS), help="run only these (repeatable)")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--json", default=None, help="write every figure and answer to this file")
    p.add_argument("--keep", default=None, help="train in this directory and keep the runs (default: a temporary one)")
    p.add_argument("--one", choices=list(CONFIGS), help=argparse.SUPPRESS)   # a child process: one configuration
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if not pathlib.Path(args.data).is_file():
        print(f"skipped: {args.data} not found (the law split lives in ../shared/data; see its README)")
        return 0
    if args.one:
        result = run_one(args.one, args.steps, args.data, args.out, args.max_new_tokens)
        pathlib.Path(args.out, "result.json").write_text(json.dumps(result, ensure_ascii=False))
        return 0
    names = args.only or list(CONFIGS)
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores; {len(names)} "
          f"configurations x {args.steps} steps, {args.jobs} at a time, 1 thread each", flush=True)
    root = pathlib.Path(args.keep) if args.keep else pathlib.Path(tempfile.mkdtemp(prefix="minillm-reading-"))
    results, waiting, running = {}, list(names), {}
    try:
        while waiting or running:
            while waiting and len(running) < args.jobs:
                name = waiting.pop(0)
                out = root / name
                cmd = [sys.executable, __file__, "--one", name, "--out", str(out), "--steps", str(args.steps),
                       "--data", args.data, "--max-new-tokens", str(args.max_new_tokens)]
                running[name] = (subprocess.Popen(cmd), out)
            time.sleep(5)
            for name, (proc, out) in list(running.items()):
                if proc.poll() is not None:
                    del running[name]
                    if proc.returncode != 0:
                        print(f"{name}: failed with exit status {proc.returncode}", flush=True)
                        continue
                    results[name] = json.loads((out / "result.json").read_text())
                    r = results[name]
                    print(f"{name:14s} done: {r['steps']} steps in {r['wall_s'] / 60:.1f} min", flush=True)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    print(f"\n{'configuration':14s} {'steps':>5s} {'min':>5s} {'cpu min':>7s} {'ngram':>5s} {'chrF':>6s} {'BLEU':>6s} "
          f"{'right art.':>10s} {'verbatim':>8s} {'distinct':>8s} {'gain':>6s}")
    for name in names:
        if name in results:
            r = results[name]
            for ngram in NGRAMS:
                g = r[f"ngram{ngram}"]
                print(f"{name:14s} {r['steps']:5d} {r['wall_s'] / 60:5.1f} {r['cpu_s'] / 60:7.1f} {ngram:5d} "
                      f"{g['chrf']:6.1f} {g['bleu']:6.1f} {100 * g['right_article']:9.1f}% {100 * g['verbatim']:7.1f}% "
                      f"{g['distinct']:8.2f} {r['gain'] if r['gain'] is not None else float('nan'):6.3f}")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(results, ensure_ascii=False, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
