"""Benchmark: BPE training time, encode throughput and compression, against Hugging Face `tokenizers` when present.

Corpora:
  (a) the questions and answers of ../shared/data/turkish-law-chatbot/test.json (skipped if absent);
  (b) about 5 MB of this Python's own standard-library source files, concatenated (every machine has them).

For each: seconds to train at vocab 8000, encode MB/s on the whole text as one string, UTF-8 bytes per token.
`tokenizers` (Rust) is an optional peer: if it is importable, its ByteLevel BPE trainer is measured in the same
run with the same vocabulary size and minimum pair frequency, and the ratios are printed. It is never required.

    python bench/tokenizer.py [--vocab 8000] [--repeats 3]
"""
import argparse
import json
import pathlib
import statistics
import sys
import sysconfig
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))
from minillm.tokenizer import SPECIAL_TOKENS, BPETokenizer  # noqa: E402

SHARED_TEST_JSON = pathlib.Path(__file__).resolve().parents[2] / "shared/data/turkish-law-chatbot/test.json"


def law_corpus():
    if not SHARED_TEST_JSON.is_file():
        return None
    rows = json.loads(SHARED_TEST_JSON.read_text(encoding="utf-8"))
    return [r["Soru"] for r in rows] + [r["Cevap"] for r in rows]


def stdlib_corpus(limit_bytes=5_000_000):
    root = pathlib.Path(sysconfig.get_paths()["stdlib"])
    texts, total = [], 0
    for path in sorted(root.rglob("*.py")):
        if "site-packages" in path.parts or "test" in path.parts:
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        texts.append(text)
        total += len(text.encode("utf-8"))
        if total >= limit_bytes:
            break
    return texts


def best_of(repeats, fn):
    """Median wall time of `repeats` calls, and the last result."""
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def measure_minillm(texts, vocab, repeats):
    train_s, tok = best_of(repeats, lambda: BPETokenizer.train(texts, vocab_size=vocab, min_frequency=2))
    whole = "\n".join(texts)
    # a fresh tokenizer each time, so the chunk cache starts cold as it would for new text
    encode_s, ids = best_of(repeats, lambda: BPETokenizer(tok.merges).encode(whole))
    assert tok.decode(ids) == whole
    return train_s, encode_s, len(ids), tok.vocab_size


def measure_peer(texts, vocab, repeats):
    try:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    except ImportError:
        return None

    def train():
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab, min_frequency=2, show_progress=False,
                                      special_tokens=list(SPECIAL_TOKENS),
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tok.train_from_iterator(texts, trainer)
        return tok

    train_s, tok = best_of(repeats, train)
    whole = "\n".join(texts)
    encode_s, enc = best_of(repeats, lambda: tok.encode(whole))
    return train_s, encode_s, len(enc.ids), tok.get_vocab_size()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab", type=int, default=8000, help="vocabulary size (default 8000)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats; the median is reported")
    args = parser.parse_args()

    corpora = [("(a) turkish-law-chatbot test.json", law_corpus()), ("(b) Python stdlib source", stdlib_corpus())]
    for name, texts in corpora:
        if texts is None:
            print(f"{name}: skipped, {SHARED_TEST_JSON} not found")
            continue
        n_bytes = len("\n".join(texts).encode("utf-8"))
        print(f"{name}: {len(texts)} texts, {n_bytes / 1e6:.2f} MB of UTF-8")
        ours = measure_minillm(texts, args.vocab, args.repeats)
        peer = measure_peer(texts, args.vocab, args.repeats)
        rows = [("minillm (pure Python)", ours)] + ([("tokenizers (Rust)", peer)] if peer else [])
        for label, (train_s, encode_s, n_tokens, vocab) in rows:
            print(f"  {label:24s} train {train_s:6.2f} s   encode {n_bytes / 1e6 / encode_s:6.2f} MB/s   "
                  f"{n_bytes / n_tokens:5.2f} bytes/token   vocab {vocab}")
        if peer:
            print(f"  ratio minillm/tokenizers: training time {ours[0] / peer[0]:.2f}x (target <= 2x), "
                  f"encode throughput {peer[1] / ours[1]:.2f}x (target >= 1x)")
        else:
            print("  (the optional peer `tokenizers` is not installed; `pip install tokenizers` to compare)")


if __name__ == "__main__":
    main()
