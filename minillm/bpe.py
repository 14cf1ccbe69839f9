"""Learning the merges of byte-pair encoding (BPE): the textbook loop, and the fast trainer that equals it.

BPE (Sennrich et al. 2016, "Neural Machine Translation of Rare Words with Subword Units", Algorithm 1) starts
from a base alphabet and repeatedly replaces the most frequent adjacent pair of symbols with a new symbol. The
list of pairs, in the order they were merged, *is* the trained tokenizer: encoding replays it on new text.

This module works on "words": sequences of integer token ids, each with the number of times it occurs. A word
is one pre-tokenised chunk of text (minillm/tokenizer.py makes them: a chunk's bytes, shifted past the special
tokens), so a merge never crosses a chunk boundary. Merge number k creates the token id `first_id + k`.

Read `train_merges_textbook` first: it *is* the algorithm, in a dozen lines. `train_merges` learns exactly the
same merges, in the same order, much faster; tests/test_tokenizer.py checks the two agree with hypothesis.

Both break ties the same way, so training is deterministic: the next merge is the pair with the highest count;
among equal counts, the smallest pair of ids, compared as (left, right).
"""
from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from typing import Mapping, Sequence

Pair = tuple[int, int]


def _check_inputs(word_counts: Mapping[Sequence[int], int], n_merges: int, first_id: int) -> None:
    """The same argument checks for both trainers, so they fail alike on bad input."""
    if not isinstance(n_merges, int) or n_merges < 0:
        raise ValueError(f"n_merges must be an int >= 0, got {n_merges!r}")
    for word, count in word_counts.items():
        if not isinstance(count, int) or count < 1:
            raise ValueError(f"word counts must be ints >= 1, got {count!r} for the word {tuple(word)!r}")
        # subtle: a word id >= first_id would collide with a token id that a merge creates
        if word and not (0 <= min(word) and max(word) < first_id):
            raise ValueError(f"every id in a word must be in [0, first_id={first_id}), got the word {tuple(word)!r}")


def merge_pair(ids: Sequence[int], pair: Pair, new_id: int) -> list[int]:
    """`ids` with every occurrence of `pair` replaced by `new_id`, scanning left to right.

    subtle: occurrences overlap when both halves of the pair are equal; scanning left to right, "a a a" with the
    pair (a, a) becomes [aa, a], not [a, aa]. Encoding must (and does) make the same choice.
    """
    out, i, n = [], 0, len(ids)
    while i < n:
        if i + 1 < n and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def train_merges_textbook(word_counts: Mapping[Sequence[int], int], n_merges: int, first_id: int,
                          min_frequency: int = 2) -> list[Pair]:
    """Learn up to `n_merges` merges: Sennrich et al. 2016, Algorithm 1, as written.

    Each round counts every adjacent pair in every word (weighted by the word's count), merges the most
    frequent pair everywhere, and starts again. It stops early when no pair occurs `min_frequency` times.
    Cost: O(n_merges * total symbols), since every round recounts everything. That is fine for a test and
    hopeless for a corpus: 8,000 merges over a million symbols is ~10^10 steps. `train_merges` is the fast one.
    """
    _check_inputs(word_counts, n_merges, first_id)
    words = [(list(word), count) for word, count in word_counts.items()]
    merges: list[Pair] = []
    while len(merges) < n_merges:
        counts: Counter[Pair] = Counter()
        for word, count in words:
            for pair in zip(word, word[1:]):
                counts[pair] += count
        if not counts:
            break  # every word is a single symbol: nothing left to merge
        best = min(counts, key=lambda p: (-counts[p], p))  # highest count; ties -> smallest (left, right)
        if counts[best] < min_frequency:
            break
        new_id = first_id + len(merges)
        merges.append(best)
        words = [(merge_pair(word, best, new_id), count) for word, count in words]
    return merges


def _merge_word_counting(word: list[int], a: int, b: int, new_id: int, freq: int, counts: defaultdict,
                         created: set) -> list[int]:
    """`merge_pair(word, (a, b), new_id)`, also updating the pair `counts` around each merge site by `freq`.

    For an occurrence "x a b y" that becomes "x Z y", the pairs (x, a) and (b, y) lose `freq` and (x, Z) and
    (Z, y) gain it; every other pair of the word is unchanged, so we never recount the whole word.
    subtle: with back-to-back occurrences "a b a b" -> "Z Z", the first site adds (Z, a) and the second one,
    whose left neighbour is now Z, takes it away again and adds (Z, Z) -- the net change is right.
    The count of (a, b) itself is not maintained here; the caller drops that pair. Pairs that gain are added
    to `created`: they are the only pairs this word can newly contain.
    """
    out = []
    i, n = 0, len(word)
    while i < n:
        if word[i] == a and i + 1 < n and word[i + 1] == b:
            if out:
                left = out[-1]
                counts[(left, a)] -= freq
                counts[(left, new_id)] += freq
                created.add((left, new_id))
            if i + 2 < n:
                right = word[i + 2]
                counts[(b, right)] -= freq
                counts[(new_id, right)] += freq
                created.add((new_id, right))
            out.append(new_id)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


def train_merges(word_counts: Mapping[Sequence[int], int], n_merges: int, first_id: int,
                 min_frequency: int = 2) -> list[Pair]:
    """Learn up to `n_merges` merges, exactly as `train_merges_textbook` does, without recounting.

    Why it is fast: a merge changes only the words that contain the merged pair, and in each of them only the
    pairs next to a merge site. So we
      1. count all pairs once, weighted by word count, and index each pair to the words that contain it;
      2. per merge, visit only the indexed words, and update only the neighbouring pairs' counts
         (`_merge_word_counting`);
      3. pick the next merge from a max-heap of counts with lazy deletion instead of scanning every pair.
    Cost: O(total symbols) once, then per merge O(symbols of the words that contain the pair + changed pairs
    * log(heap size)); common pairs live in many words, rare pairs (most merges, late on) in few. This is the
    incremental bookkeeping of Sennrich et al.'s reference implementation (subword-nmt, learn_bpe.py) and of
    Hugging Face `tokenizers`' BPE trainer.
    """
    _check_inputs(word_counts, n_merges, first_id)
    words = [list(word) for word in word_counts]
    freqs = list(word_counts.values())

    # 1. Pair counts (weighted by word count) and the index pair -> words that (may) contain it.
    #    subtle: the index is never pruned, so a word listed under a pair may have lost it to an earlier merge.
    counts: defaultdict[Pair, int] = defaultdict(int)
    where: defaultdict[Pair, set[int]] = defaultdict(set)
    for wi, word in enumerate(words):
        f = freqs[wi]
        for pair in zip(word, word[1:]):
            counts[pair] += f
            where[pair].add(wi)

    # 2. Max-heap of (-count, left, right); heapq is a min-heap, hence the minus. Lazy deletion: when a count
    #    falls we leave the old entry in place, so an entry may hold a stale, *higher* count (we push only when a
    #    count grows). When a stale entry reaches the top we push the current count back and pop again.
    #    subtle: every live pair then has an entry >= its current count, so the first entry popped whose count
    #    is current is the true maximum, and among equal counts the smallest (left, right) sorts first.
    heap = [(-c, a, b) for (a, b), c in counts.items()]
    heapq.heapify(heap)  # O(number of distinct pairs)

    merges: list[Pair] = []
    while len(merges) < n_merges and heap:
        neg_count, a, b = heapq.heappop(heap)
        pair = (a, b)
        current = counts.get(pair, 0)
        if current != -neg_count:  # stale entry
            if current > 0:
                heapq.heappush(heap, (-current, a, b))
            continue
        if current < min_frequency:
            break  # the best remaining pair is too rare; so is every other one
        new_id = first_id + len(merges)
        merges.append(pair)

        # 3. Apply the merge only to the words indexed under the pair, updating only their pair counts.
        grown = set()
        for wi in where.pop(pair):
            word = words[wi]
            created = set()
            new_word = _merge_word_counting(word, a, b, new_id, freqs[wi], counts, created)
            if len(new_word) == len(word):
                continue  # stale index entry: an earlier merge already consumed this pair here
            for p in created:
                where[p].add(wi)
            grown |= created
            words[wi] = new_word
        # subtle: the pair can never occur again (no merged word still holds it, and every pair a merge creates
        # contains new_id), so dropping its count turns its remaining heap entries stale for good.
        counts.pop(pair, None)
        for p in grown:
            if counts[p] > 0:
                heapq.heappush(heap, (-counts[p], p[0], p[1]))
    return merges
