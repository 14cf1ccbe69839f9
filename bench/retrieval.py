"""Benchmark: retrieval on the law split -- how to retrieve, what retrieval alone gives, what it costs.

No training here (bench/reading.py trains the models that read the passages). On the law split in ../shared cut
90/10 as train.py cuts it (1,353 training and 147 validation pairs), the Constitution in data/anayasa.json:

1. The stemmer and BM25's k1 and b, chosen on the TRAINING questions only (validation is never used to choose):
   of the training pairs whose answer cites an article the question does not name, how often the cited
   article is the first BM25 article (hit@1) or among the first 3 (hit@3); and the chrF of the best training
   answer found for each training question among the OTHER training pairs (leave one out).
2. Retrieval alone on the validation questions, the baselines a reading model must beat: the text of the top
   article passage; the top training answer; the nearest neighbour (Jaccard on token ids,
   minillm.machinery.baselines); and the oracle article (the one the reference cites). Each with greedy-free
   chrF and the right-article rate: of the validation pairs whose reference cites an article, the share whose
   answer cites the same one first.
3. The time retrieval adds to one answer at batch 1: Retriever.search + encoding the passages, against greedy
   decoding of that answer by the `small` model on the same encoder input (random weights, 48 new tokens).

    python bench/retrieval.py [--threads 1] [--repeats 5]
"""
import argparse
import os
import pathlib
import statistics
import sys
import time

import sacrebleu
import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
from minillm.corpus import article_passages, article_references, pair_passages, training_corpus  # noqa: E402
from minillm.data import clean_pairs, split_pairs  # noqa: E402
from minillm.generation import GenerationConfig, decode_ids  # noqa: E402
from minillm.machinery.baselines import nearest_neighbour_answers  # noqa: E402
from minillm.machinery.corpusfile import read_articles  # noqa: E402
from minillm.machinery.datafiles import load_pairs  # noqa: E402
from minillm.model import ModelConfig, Seq2Seq  # noqa: E402
from minillm.retrieval import BM25, Exclusion, Retriever, encoder_input, terms  # noqa: E402
from minillm.tokenizer import BPETokenizer  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
LAW = ROOT.parent / "shared" / "data" / "turkish-law-chatbot" / "test.json"
ARTICLES = ROOT / "data" / "anayasa.json"


def chrf(hyps, refs) -> float:
    return sacrebleu.corpus_chrf(hyps, [refs]).score


def right_article_rate(answers, refs) -> tuple[float, int]:
    """(share, n): of the references that cite an article, the share whose answer cites the same one first."""
    cited = [(article_references(a), article_references(r)) for a, r in zip(answers, refs)]
    cited = [(a, r) for a, r in cited if r]
    return sum(bool(a) and a[0] == r[0] for a, r in cited) / max(1, len(cited)), len(cited)


def unnamed_citations(pairs) -> list[tuple[str, int]]:
    """(question, cited article) for pairs whose answer cites an article that the question does not name."""
    out = []
    for q, a in pairs:
        cited = article_references(a)
        if cited and not article_references(q):
            out.append((q, cited[0]))
    return out


def choose_stemmer(records, train) -> None:
    print("1. stemmer and BM25 parameters, on the training questions only")
    asks = unnamed_citations(train)
    print(f"   {len(asks)} training questions whose answer cites an article they do not name; the chrF column is "
          f"the best OTHER training answer for each of the {len(train)} training questions")
    print(f"   {'prefix':>6s} {'k1':>4s} {'b':>4s} {'hit@1':>6s} {'hit@3':>6s} {'pair chrF':>9s}")
    settings = [(p, 1.2, 0.75) for p in (0, 4, 5, 6, 7)] + [(5, k1, b) for k1, b in ((0.9, 0.4), (1.5, 0.75),
                                                                                     (1.2, 0.5), (1.2, 0.9))]
    for prefix, k1, b in settings:
        law = article_passages(records)
        index = BM25([terms(p.key, prefix) for p in law], k1, b)
        hit1 = hit3 = 0
        for q, n in asks:
            order = torch.sort(index.scores(terms(q, prefix)), descending=True, stable=True).indices.tolist()
            seen = []
            for i in order:                                  # distinct articles, best first
                if law[i].article not in seen:
                    seen.append(law[i].article)
                if len(seen) == 3:
                    break
            hit1 += seen[:1] == [n]
            hit3 += n in seen
        answers = Retriever(pair_passages(train), articles=0, pairs=1, prefix=prefix, k1=k1, b=b)
        best = []
        for i, (q, a) in enumerate(train):
            hits = answers.search(q, Exclusion(pair=i, text=a))
            best.append(hits[0].passage.text if hits else "")
        print(f"   {prefix:6d} {k1:4.1f} {b:4.2f} {100 * hit1 / len(asks):6.1f} {100 * hit3 / len(asks):6.1f} "
              f"{chrf(best, [a for _, a in train]):9.1f}", flush=True)


def baselines(records, train, val, tok) -> None:
    print("\n2. retrieval alone on the validation questions (no model), the baselines a reading model must beat")
    refs = [a for _, a in val]
    retriever = Retriever(training_corpus(records, train, val), articles=1, pairs=1)
    by_article = {r["madde"]: r for r in records}
    top_article, top_answer = [], []
    for q, _ in val:
        hits = retriever.search(q)
        law = [h for h in hits if h.passage.article is not None]
        pair = [h for h in hits if h.passage.pair is not None]
        top_article.append(law[0].passage.text if law else "")
        top_answer.append(pair[0].passage.text if pair else "")
    oracle = []
    for q, a in val:
        cited = article_references(a)
        oracle.append(f"Anayasa madde {cited[0]}: {by_article[cited[0]]['metin']}" if cited and cited[0] in by_article
                      else "")
    rows = [("top article passage", top_article), ("top training answer", top_answer),
            ("nearest neighbour (Jaccard)", nearest_neighbour_answers(train, [q for q, _ in val], tok)),
            ("oracle: the cited article's text", oracle)]
    print(f"   {'answer':34s} {'chrF':>6s} {'right article':>14s}")
    for name, answers in rows:
        rate, n = right_article_rate(answers, refs)
        print(f"   {name:34s} {chrf(answers, refs):6.1f} {100 * rate:13.1f}%   (of {n})")


def overhead(records, train, val, tok, repeats: int) -> None:
    print("\n3. the time retrieval adds to one answer at batch 1 (search + encoding the passages, vs decoding)")
    retriever = Retriever(training_corpus(records, train, val))
    torch.manual_seed(0)
    model = Seq2Seq(ModelConfig.preset("small", vocab_size=tok.vocab_size, max_len=320, max_src_len=320,
                                       copy=True)).eval()
    config = GenerationConfig(strategy="greedy", max_new_tokens=48)
    questions = [q for q, _ in val[:20]]
    search_s, decode_s = [], []
    for _ in range(repeats):
        for q in questions:
            t0 = time.perf_counter()
            src, _, _ = encoder_input(tok, q, 320, retriever)
            t1 = time.perf_counter()
            decode_ids(model, [src], config)
            t2 = time.perf_counter()
            search_s.append(t1 - t0)
            decode_s.append(t2 - t1)
    s, d = statistics.median(search_s), statistics.median(decode_s)
    print(f"   median over {len(questions)} questions x {repeats}: retrieval + encoding {1000 * s:.2f} ms, greedy "
          f"decoding of 48 tokens {1000 * d:.0f} ms: retrieval adds {100 * s / d:.1f} % (target <= 10 %)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(LAW), help="question-answer file (default: the law split in ../shared)")
    p.add_argument("--articles", default=str(ARTICLES))
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    if not pathlib.Path(args.data).is_file():
        print(f"skipped: {args.data} not found (the law split lives in ../shared/data; see its README)")
        return 0
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores; torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads")
    pairs, _ = clean_pairs(load_pairs(args.data))
    splits = split_pairs(pairs, 0.1, 0.0)
    train, val = splits["train"], splits["val"]
    records = read_articles(args.articles)
    print(f"{args.data}: train {len(train)}, val {len(val)}; {args.articles}: {len(records)} articles\n")
    tok = BPETokenizer.train([q + " " + a for q, a in train] + [p.text for p in article_passages(records)], 8000)
    choose_stemmer(records, train)
    baselines(records, train, val, tok)
    overhead(records, train, val, tok, args.repeats)
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
