"""Byte-pair encoding (BPE) on token ids: learning the merges and replaying them, each in two ways.

BPE (Sennrich et al. 2016, "Neural Machine Translation of Rare Words with Subword Units",
Algorithm 1) starts from a base alphabet and repeatedly replaces the most frequent adjacent pair of
symbols with a new symbol. The list of pairs, in the order they were merged, *is* the trained
tokenizer: encoding replays it on new text.

This module works on "words": sequences of integer token ids, each with the number of times it
occurs. A word is one pre-tokenised chunk of text (minillm/tokenizer.py makes them: a chunk's
bytes, shifted past the special tokens), so a merge never crosses a chunk boundary. Merge number k
creates the token id `first_id + k`.

Read `train_merges_textbook` first: it *is* the algorithm, in a dozen lines. `train_merges` learns
exactly the same merges, in the same order, much faster; tests/test_tokenizer.py checks the two
agree with hypothesis.

Both break ties the same way, so training is deterministic: the next merge is the pair with the
highest count; among equal counts, the smallest pair of ids, compared as (left, right).

Encoding a chunk replays the merges, earliest-learned first: `merge_chunk_textbook` to read, the
equal `merge_chunk` (O(n log n) instead of O(n^2)) to run. Both take `merge_ranks`, which maps a
pair to its merge rank: the id of the token it merges into.
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
            raise ValueError(
                f"word counts must be ints >= 1, got {count!r} for the word {tuple(word)!r}")
        # subtle: a word id >= first_id would collide with a token id that a merge creates
        if word and not (0 <= min(word) and max(word) < first_id):
            raise ValueError(f"every id in a word must be in [0, first_id={first_id}), "
                             f"got the word {tuple(word)!r}")


def merge_pair(ids: Sequence[int], pair: Pair, new_id: int) -> list[int]:
    """`ids` with every occurrence of `pair` replaced by `new_id`, scanning left to right.

    subtle: occurrences overlap when both halves of the pair are equal; scanning left to right,
    "a a a" with the pair (a, a) becomes [aa, a], not [a, aa]. Encoding must (and does) make the
    same choice.
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

    Each round counts every adjacent pair in every word (weighted by the word's count), merges the
    most frequent pair everywhere, and starts again. It stops early when no pair occurs
    `min_frequency` times. Cost: O(n_merges * total symbols), since every round recounts
    everything. That is fine for a test and hopeless for a corpus: 8,000 merges over a million
    symbols is ~10^10 steps. `train_merges` is the fast one.
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
        # highest count; ties -> smallest (left, right)
        best = min(counts, key=lambda p: (-counts[p], p))
        if counts[best] < min_frequency:
            break
        new_id = first_id + len(merges)
        merges.append(best)
        words = [(merge_pair(word, best, new_id), count) for word, count in words]
    return merges


# ------------------------------------------------------------------- the fast trainer, step by step

def _count_pairs(words: list[list[int]],
                 freqs: list[int]) -> tuple[defaultdict[Pair, int], defaultdict[Pair, set[int]]]:
    """Step 1: every pair's count, and where it occurs, so later steps never recount everything.

    Returns the pair counts (weighted by word count) and the index pair -> words that (may)
    contain it.
    subtle: the index is never pruned, so a word listed under a pair may have lost it to an
    earlier merge.
    """
    counts: defaultdict[Pair, int] = defaultdict(int)
    where: defaultdict[Pair, set[int]] = defaultdict(set)
    for wi, word in enumerate(words):
        f = freqs[wi]
        for pair in zip(word, word[1:]):
            counts[pair] += f
            where[pair].add(wi)
    return counts, where


def _pop_most_frequent(heap: list[tuple[int, int, int]],
                       counts: Mapping[Pair, int]) -> tuple[Pair, int] | None:
    """Step 2: the most frequent pair and its count (None if none is left), without a full scan.

    `heap` is a max-heap of (-count, left, right); heapq is a min-heap, hence the minus. Lazy
    deletion: when a count falls we leave the old entry in place, so an entry may hold a stale,
    *higher* count (we push only when a count grows). When a stale entry reaches the top we push
    the current count back and pop again.
    subtle: every live pair then has an entry >= its current count, so the first entry popped whose
    count is current is the true maximum, and among equal counts the smallest (left, right) sorts
    first.
    """
    while heap:
        neg_count, a, b = heapq.heappop(heap)
        current = counts.get((a, b), 0)
        if current == -neg_count:
            return (a, b), current
        if current > 0:  # a stale entry of a pair that still occurs: put it back at its count
            heapq.heappush(heap, (-current, a, b))
    return None


def _merge_word_counting(word: list[int], a: int, b: int, new_id: int, freq: int,
                         counts: defaultdict, created: set) -> list[int]:
    """`merge_pair(word, (a, b), new_id)`, also updating the pair `counts` near each merge site.

    For an occurrence "x a b y" that becomes "x Z y", the pairs (x, a) and (b, y) lose `freq` and
    (x, Z) and (Z, y) gain it; every other pair of the word is unchanged, so we never recount the
    whole word.
    subtle: with back-to-back occurrences "a b a b" -> "Z Z", the first site adds (Z, a) and the
    second one, whose left neighbour is now Z, takes it away again and adds (Z, Z) -- the net
    change is right.
    The count of (a, b) itself is not maintained here; the caller drops that pair. Pairs that gain
    are added to `created`: they are the only pairs this word can newly contain.
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


def _merge_everywhere(pair: Pair, new_id: int, words: list[list[int]], freqs: list[int],
                      counts: defaultdict[Pair, int],
                      where: defaultdict[Pair, set[int]]) -> set[Pair]:
    """Step 3: apply one merge, visiting only the words indexed under `pair`.

    Returns the pairs whose counts grew: the only ones that need a new heap entry.
    """
    a, b = pair
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
    # subtle: the pair can never occur again (no merged word still holds it, and every pair a
    # merge creates contains new_id), so dropping its count turns its remaining heap entries stale
    # for good.
    counts.pop(pair, None)
    return grown


def train_merges(word_counts: Mapping[Sequence[int], int], n_merges: int, first_id: int,
                 min_frequency: int = 2) -> list[Pair]:
    """Learn up to `n_merges` merges, exactly as `train_merges_textbook` does, without recounting.

    Why it is fast: a merge changes only the words that contain the merged pair, and in each of
    them only the pairs next to a merge site. So we
      1. count all pairs once, weighted by word count, and index each pair to the words that
         contain it (`_count_pairs`);
      2. pick the next merge from a max-heap of counts with lazy deletion instead of scanning every
         pair (`_pop_most_frequent`);
      3. per merge, visit only the indexed words, and update only the neighbouring pairs' counts
         (`_merge_everywhere`, `_merge_word_counting`).
    Cost: O(total symbols) once, then per merge O(symbols of the words that contain the pair +
    changed pairs * log(heap size)); common pairs live in many words, rare pairs (most merges,
    late on) in few. This is the incremental bookkeeping of Sennrich et al.'s reference
    implementation (subword-nmt, learn_bpe.py) and of Hugging Face `tokenizers`' BPE trainer.
    """
    _check_inputs(word_counts, n_merges, first_id)
    words = [list(word) for word in word_counts]
    freqs = list(word_counts.values())
    counts, where = _count_pairs(words, freqs)
    heap = [(-c, a, b) for (a, b), c in counts.items()]
    heapq.heapify(heap)  # O(number of distinct pairs)

    merges: list[Pair] = []
    while len(merges) < n_merges:
        top = _pop_most_frequent(heap, counts)
        if top is None:
            break  # no pair is left: every word is a single symbol
        pair, count = top
        if count < min_frequency:
            break  # the best remaining pair is too rare; so is every other one
        new_id = first_id + len(merges)
        merges.append(pair)
        grown = _merge_everywhere(pair, new_id, words, freqs, counts, where)
        for p in grown:
            if counts[p] > 0:
                heapq.heappush(heap, (-counts[p], p[0], p[1]))
    return merges


# ------------------------------------------------------------------- encoding: replaying the merges

def merge_chunk_textbook(ids: list[int], merge_ranks: dict[Pair, int]) -> list[int]:
    """BPE on one chunk: repeatedly apply the earliest-learned merge present, as during training.

    `merge_ranks[pair]` is the id of the token the pair merges into, so the lowest merge rank is
    the earliest merge. `merge_rank_at[i]` is the merge rank of (ids[i], ids[i + 1]); merging at i
    changes only the merge ranks at i - 1 and i. Taking the leftmost lowest-ranked pair each time
    merges repeated pairs left to right, as training did. Each merge scans the chunk (`min`,
    `index`, `del`): O(n^2) for n bytes, minutes for a 1 MB word."""
    ids = list(ids)
    unmerged = 1 << 62  # the merge rank of a pair that no merge makes
    merge_rank_at = [merge_ranks.get(p, unmerged) for p in zip(ids, ids[1:])]
    while merge_rank_at:
        new_id = min(merge_rank_at)
        if new_id == unmerged:
            break
        i = merge_rank_at.index(new_id)
        ids[i:i + 2] = [new_id]
        del merge_rank_at[i]
        if i > 0:
            merge_rank_at[i - 1] = merge_ranks.get((ids[i - 1], new_id), unmerged)
        if i < len(merge_rank_at):
            merge_rank_at[i] = merge_ranks.get((new_id, ids[i + 1]), unmerged)
    return ids


def merge_chunk(ids: list[int], merge_ranks: dict[Pair, int]) -> list[int]:
    """The same result as `merge_chunk_textbook`, in O(n log n) for a chunk of n bytes, not O(n^2).

    A pair that a merge forms contains the new token, so it was learned later and has a higher
    merge rank (merges are made of earlier tokens; `BPETokenizer.train` and `.load` in
    minillm/tokenizer.py guarantee it). So the textbook loop applies every merge of one merge
    rank, leftmost first, before any higher one. This does the same, one merge rank at a time,
    without rescanning: `positions[r]` lists where a pair of merge rank r was formed, the heap
    `lowest` holds the merge ranks listed, and the symbols form a doubly linked list over the
    positions of `ids` (a merged symbol keeps the position of its left part, so nothing shifts). A
    merge forms at most two pairs: O(n) positions, sorted once: O(n log n)."""
    # ids[i]: the symbol that starts at byte i, or -1 once merged into its left neighbour
    ids = list(ids)
    n = len(ids)
    next_pos = list(range(1, n + 1))  # position of the next live symbol; n means none
    prev_pos = list(range(-1, n - 1))  # position of the previous live symbol; -1 means none
    positions: dict[int, list[int]] = {}  # merge rank -> positions where such a pair was formed
    lowest: list[int] = []  # heap of the merge ranks in `positions`

    def formed(i: int) -> None:  # a pair now starts at position i: list it under its merge rank
        merge_rank = merge_ranks.get((ids[i], ids[next_pos[i]]))
        if merge_rank is not None:
            if merge_rank not in positions:
                heapq.heappush(lowest, merge_rank)
            positions.setdefault(merge_rank, []).append(i)

    for i in range(n - 1):
        formed(i)
    while lowest:
        merge_rank = heapq.heappop(lowest)
        for i in sorted(positions.pop(merge_rank)):  # leftmost first, as the textbook loop
            j = next_pos[i]
            # subtle: the pair listed at i may be gone (in "aaa", merging (a a) at 0 kills position
            # 1, and a merge changes its neighbours' pairs). A merge rank names one pair, so "i
            # still starts this pair" is the whole check.
            if j == n or merge_ranks.get((ids[i], ids[j])) != merge_rank:
                continue
            ids[i], ids[j] = merge_rank, -1  # merge j into i; the new token's id is its merge rank
            k = next_pos[i] = next_pos[j]
            if k < n:
                prev_pos[k] = i
                formed(i)
            if prev_pos[i] >= 0:
                formed(prev_pos[i])
    return [t for t in ids if t >= 0]
