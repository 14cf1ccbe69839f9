"""Show the data pipeline on the real test split: cleaning, split, token lengths, truncation, padding, a baseline.

On ../shared/data/turkish-law-chatbot/test.json (skipped with a message if absent), with the split the trainer
uses (TrainConfig: val_fraction 0.1, no test share) and an 8k BPE tokenizer trained on the training split:

  - what each cleaning step changed, and the split sizes;
  - token-length percentiles (50/90/95/99/max) of questions and answers, special tokens excluded;
  - the fraction of pairs truncated at the default maximum lengths (data.MAX_SRC_LEN / MAX_TGT_LEN) and at
    the trainer's;
  - how much of a batch is real tokens: TokenBatchSampler (length-bucketed) against the same token budget with
    items in random order, and against padding every pair to a fixed 128 + 128 (the simplest way);
  - the nearest-neighbour baseline on the validation split (the answer of the training question with the
    highest token-id Jaccard overlap), and the most frequent training answer, scored with BLEU and chrF.

    python bench/data.py [--data FILE] [--vocab 8000] [--val-fraction 0.1] [--test-fraction 0.0]
"""
import argparse
import collections
import pathlib
import random
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
from minillm.batching import Seq2SeqDataset, TokenBatchSampler  # noqa: E402
from minillm.data import MAX_SRC_LEN, MAX_TGT_LEN, clean_pairs, split_pairs  # noqa: E402
from minillm.machinery.datafiles import load_pairs  # noqa: E402
from minillm.machinery.baselines import nearest_neighbour_answers  # noqa: E402
from minillm.metrics import text_scores  # noqa: E402
from minillm.tokenizer import BPETokenizer  # noqa: E402

SHARED_TEST_JSON = pathlib.Path(__file__).resolve().parents[2] / "shared/data/turkish-law-chatbot/test.json"
TRAINER_MAX_LENS = (128, 192)   # TrainConfig.max_src_len / max_tgt_len at the time of writing


def percentiles(values, ps=(50, 90, 95, 99)):
    """Nearest-rank percentiles (the smallest value with at least p% of the data at or below it), and max."""
    v = sorted(values)
    out = {f"p{p}": v[max(0, -(-p * len(v) // 100) - 1)] for p in ps}
    out["max"] = v[-1]
    return out


def padded_tokens(batches, lengths):
    return sum(len(b) * (max(lengths[i][0] for i in b) + max(lengths[i][1] for i in b)) for b in batches)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(SHARED_TEST_JSON), help="Q&A file (default: the shared test split)")
    parser.add_argument("--vocab", type=int, default=8000, help="BPE vocabulary size")
    parser.add_argument("--val-fraction", type=float, default=0.1)
    parser.add_argument("--test-fraction", type=float, default=0.0)
    parser.add_argument("--batch-tokens", type=int, default=2048, help="token budget for the padding figures")
    args = parser.parse_args(argv)
    if not pathlib.Path(args.data).is_file():
        print(f"skipped: {args.data} not found (the shared reference data is not beside this checkout)")
        return 0

    raw = load_pairs(args.data)
    pairs, report = clean_pairs(raw)
    print(f"data: {args.data}")
    print(f"cleaning: {report}")
    splits = split_pairs(pairs, args.val_fraction, args.test_fraction)
    print(f"split (val {args.val_fraction}, test {args.test_fraction}, by SHA-256 of the question): "
          + ", ".join(f"{k} {len(v)}" for k, v in splits.items()))

    t0 = time.perf_counter()
    tok = BPETokenizer.train((q + " " + a for q, a in splits["train"]), vocab_size=args.vocab)
    print(f"tokenizer: trained on the training split in {time.perf_counter() - t0:.1f} s, "
          f"vocab {tok.vocab_size} (asked {args.vocab})")

    q_len = [len(x) for x in tok.encode_batch([q for q, _ in pairs])]
    a_len = [len(x) for x in tok.encode_batch([a for _, a in pairs])]
    print("token lengths (all cleaned pairs, no special tokens):")
    for name, lens in (("question", q_len), ("answer", a_len)):
        p = percentiles(lens)
        print(f"  {name:8s} mean {sum(lens) / len(lens):6.1f}  " + "  ".join(f"{k} {v}" for k, v in p.items()))

    for src_max, tgt_max, label in ((MAX_SRC_LEN, MAX_TGT_LEN, "data.py defaults"),
                                    (*TRAINER_MAX_LENS, "TrainConfig defaults")):
        ds = Seq2SeqDataset(pairs, tok, src_max, tgt_max)
        print(f"truncated at max_src_len {src_max}, max_tgt_len {tgt_max} ({label}): questions "
              f"{ds.n_src_truncated}/{len(ds)} ({100 * ds.n_src_truncated / len(ds):.2f}%), answers "
              f"{ds.n_tgt_truncated}/{len(ds)} ({100 * ds.n_tgt_truncated / len(ds):.2f}%)")

    # Padding: share of real tokens among the slots a batch fills, at the same token budget.
    ds = Seq2SeqDataset(splits["train"], tok, *TRAINER_MAX_LENS)
    lengths = ds.lengths
    real = sum(s + t for s, t in lengths)
    sampler = TokenBatchSampler(lengths, args.batch_tokens, seed=0)
    bucketed = list(sampler)
    order = list(range(len(lengths)))
    random.Random(0).shuffle(order)
    unbucketed = sampler._batches_from(order)
    fixed = len(lengths) * (128 + 128)
    eff_b, eff_u, eff_f = real / padded_tokens(bucketed, lengths), real / padded_tokens(unbucketed, lengths), \
        real / fixed
    print(f"real-token share of padded batches ({args.batch_tokens}-token budget, training split): "
          f"bucketed {100 * eff_b:.1f}% in {len(bucketed)} batches, random order {100 * eff_u:.1f}% in "
          f"{len(unbucketed)} batches (ratio {eff_b / eff_u:.2f}x); fixed 128+128 padding {100 * eff_f:.1f}% "
          f"(ratio {eff_b / eff_f:.2f}x)")

    if not splits["val"]:
        print("no validation split: baseline skipped")
        return 0
    val_q = [q for q, _ in splits["val"]]
    refs = [a for _, a in splits["val"]]
    t0 = time.perf_counter()
    nn = nearest_neighbour_answers(splits["train"], val_q, tok)
    nn_s = time.perf_counter() - t0
    most_common = collections.Counter(a for _, a in splits["train"]).most_common(1)[0][0]
    for name, hyps in (("nearest-neighbour (token Jaccard)", nn),
                       ("most frequent training answer", [most_common] * len(refs))):
        s = text_scores(hyps, refs)
        print(f"baseline on val ({s['n']} pairs), {name}: BLEU {s['bleu']:.2f}, mean sentence BLEU "
              f"{s['sentence_bleu_mean']:.2f}, chrF {s['chrf']:.2f}")
    print(f"  retrieval took {nn_s:.2f} s; signatures: BLEU {s['signatures']['bleu']}; "
          f"sentence BLEU {s['signatures']['sentence_bleu']}; chrF {s['signatures']['chrf']}")
    exact = sum(h == r for h, r in zip(nn, refs))
    print(f"  nearest-neighbour answers identical to the reference: {exact}/{len(refs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
