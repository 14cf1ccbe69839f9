"""Benchmark: BPE training time, encode throughput and compression, against Hugging Face `tokenizers` when present.

Corpora:
  (a) the questions and answers of ../shared/data/turkish-law-chatbot/test.json (skipped if absent);
  (b) about 5 MB of this Python's own standard-library source files, concatenated (every machine has them).

For each: seconds to train at vocab 8000, encode MB/s on the whole text as one string, UTF-8 bytes per token.
`tokenizers` (Rust) is an optional peer: if it is importable, its ByteLevel BPE trainer is measured in the same
run with the same vocabulary size and minimum pair frequency, and the ratios are printed. It is never required.

Then "1 MB in one word": text with no space in it is one pre-tokenised chunk, so encoding it is one call of
`merge_chunk` on n bytes ('ı' * 500_000 is 1 MB of UTF-8; so is 'a' * 1_000_000). The tokenizer is trained on
runs of those letters, so every byte takes part in about log2(1024) merges: the worst case. The textbook loop
(`BPETokenizer(merges, textbook=True)`, O(n^2)) is timed beside the fast one on words small enough to wait for,
doubling the size: the time grows about 4x per doubling for the textbook loop, about 2x for `merge_chunk`.

    python bench/tokenizer.py [--vocab 8000] [--repeats 3] [--only corpora|one-word]
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


def measure_one_word(repeats, textbook_chars=(2_000, 4_000, 8_000)):
    merges = BPETokenizer.train(["ı" * 1024, "a" * 1024] * 2, vocab_size=400).merges
    print(f"1 MB in one word (a tokenizer of {len(merges)} merges, trained on runs of 'ı' and 'a'):")
    for letter, n in (("ı", 500_000), ("a", 1_000_000)):
        word = letter * n
        # a fresh tokenizer each time: with a warm cache the second call would only be a dictionary look-up
        seconds, ids = best_of(repeats, lambda: BPETokenizer(merges).encode(word))
        assert BPETokenizer(merges).decode(ids) == word
        print(f"  {letter!r} * {n:,} ({len(word.encode()) / 1e6:.1f} MB): encode {seconds:5.2f} s "
              f"({len(word.encode()) / 1e6 / seconds:.2f} MB/s), {len(ids):,} tokens")
    print("  textbook loop vs merge_chunk on smaller words of 'ı' (time per size; x = growth when the size doubles):")
    previous = None
    for n in textbook_chars:
        word = "ı" * n
        old_s, old_ids = best_of(1, lambda: BPETokenizer(merges, textbook=True).encode(word))
        new_s, new_ids = best_of(repeats, lambda: BPETokenizer(merges).encode(word))
        assert old_ids == new_ids
        growth = f"  (x{old_s / previous[0]:.1f} vs x{new_s / previous[1]:.1f})" if previous else ""
        print(f"  {n * 2 / 1e3:5.0f} KB: textbook {old_s:6.3f} s   merge_chunk {new_s:6.4f} s   "
              f"{old_s / new_s:6.0f}x faster{growth}")
        previous = (old_s, new_s)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab", type=int, default=8000, help="vocabulary size (default 8000)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats; the median is reported")
    parser.add_argument("--only", choices=("corpora", "one-word"), help="run one part only (default: both)")
    args = parser.parse_args()

    if args.only != "one-word":
        measure_corpora(args)
    if args.only != "corpora":
        measure_one_word(args.repeats)


def measure_corpora(args):
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
