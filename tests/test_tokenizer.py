"""Specification of minillm.tokenizer (byte-level BPE) and minillm.bpe (learning the merges).

minillm.bpe holds the textbook BPE loop (recount every pair after every merge) next to the fast, incremental
trainer. The tests check the textbook loop by hand and against `reference_merges` below (an oracle outside the
library), and the fast trainer against the textbook loop. Encoding likewise: minillm.tokenizer's
`merge_chunk_textbook` (rescan the chunk after every merge) is checked by hand, and `merge_chunk` (one rank at a
time, O(n log n)) against it. Their speed on a 1 MB word is measured in bench/tokenizer.py, not here.
"""
import os
import re
from collections import Counter

import pytest
from hypothesis import given, strategies as st

from minillm import bpe
from minillm.tokenizer import FIRST_MERGE_ID, PATTERN, BPETokenizer, count_chunks, merge_chunk, merge_chunk_textbook

A, B, C, D = (ord(ch) + 3 for ch in "abcd")  # byte token id = byte value + 3

# Text drawn from a small alphabet produces many repeated pairs, ties and overlapping runs ("aaa");
# the Turkish letters are two bytes in UTF-8, so merges inside a character are exercised too.
small_text = st.text(alphabet="aab ıİşğ\n1'.", max_size=40)
any_char = st.one_of(st.characters(), st.integers(0xD800, 0xDFFF).map(chr))  # includes lone surrogates
any_text = st.text(alphabet=any_char, max_size=60)


def word_counts_of(texts):
    """The training words of `texts`, built here without the tokenizer: chunk ids (byte + 3) -> count."""
    return Counter(tuple(b + 3 for b in chunk.encode("utf-8", "surrogatepass"))
                   for text in texts for chunk in re.findall(PATTERN, text))


def reference_merges(word_counts, n_merges, first_id, min_frequency=2):
    """BPE training written from Sennrich et al. 2016, Algorithm 1, independently of minillm.bpe.

    A word seen n times is simply listed n times (no weighting), so a pair's count is how often it occurs in
    the corpus. Each round: count all adjacent pairs, pick the most frequent (ties: the smallest (left, right)
    pair), stop if it occurs fewer than min_frequency times, else replace it, left to right, by a new id."""
    corpus = [list(word) for word, count in word_counts.items() for _ in range(count)]
    merges = []
    for new_id in range(first_id, first_id + n_merges):
        counts = Counter(pair for word in corpus for pair in zip(word, word[1:]))
        ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        if not ranked or ranked[0][1] < min_frequency:
            break
        pair = ranked[0][0]
        merges.append(pair)
        for word in corpus:
            i = 0
            while i < len(word) - 1:
                if (word[i], word[i + 1]) == pair:
                    word[i:i + 2] = [new_id]   # then look past the new symbol: occurrences never overlap
                i += 1
    return merges


@pytest.fixture(scope="module")
def turkish_tok():
    texts = [
        "Anayasa'nın 1. maddesine göre Türkiye Devleti bir Cumhuriyettir.",
        "Türkiye Cumhuriyeti, insan haklarına saygılı, demokratik, laik ve sosyal bir hukuk Devletidir.",
        "Egemenlik kayıtsız şartsız Milletindir. ılık ışık, iğne, şişe, İstanbul, i̇lçe",
        "Temel hak ve hürriyetler, kişinin dokunulmaz, devredilmez, vazgeçilmez haklarıdır.",
    ] * 3
    return BPETokenizer.train(texts, vocab_size=400)


def test_hand_checkable_example():
    # "aaabdaaabac": aa (4 times) -> Z; then (Z,a) and (a,b) tie at 2 and the smaller pair (a,b) wins -> Y;
    # then ZY (2 times) -> X. The text becomes X d X a c.
    tok = BPETokenizer.train(["aaabdaaabac"], vocab_size=FIRST_MERGE_ID + 3)
    Z, Y, X = FIRST_MERGE_ID, FIRST_MERGE_ID + 1, FIRST_MERGE_ID + 2
    assert tok.merges == [(A, A), (A, B), (Z, Y)]
    assert tok.encode("aaabdaaabac") == [X, D, X, A, C]
    assert tok.vocab_size == FIRST_MERGE_ID + 3


def test_textbook_loop_by_hand():
    # merge_pair scans left to right: overlapping occurrences of (a, a) merge from the left.
    assert bpe.merge_pair([A, A, A], (A, A), 999) == [999, A]
    assert bpe.merge_pair([A, B, A, B, C], (A, B), 999) == [999, 999, C]
    # "aaabdaaabac", as in test_hand_checkable_example: aa -> Z, ab -> Y (wins the tie with Za), ZY -> X.
    # The text is then X d X a c: every pair occurs once, below min_frequency=2, so training stops at 3 merges.
    word = {tuple(ord(ch) + 3 for ch in "aaabdaaabac"): 1}
    Z, Y, X = FIRST_MERGE_ID, FIRST_MERGE_ID + 1, FIRST_MERGE_ID + 2
    assert bpe.train_merges_textbook(word, 10, FIRST_MERGE_ID, min_frequency=2) == [(A, A), (A, B), (Z, Y)]
    assert reference_merges(word, 10, FIRST_MERGE_ID, min_frequency=2) == [(A, A), (A, B), (Z, Y)]  # the oracle too
    # With min_frequency=1 the fourth merge is a four-way tie at count 1: (X,d) (d,X) (X,a) (a,c); (a,c) is smallest.
    assert bpe.train_merges_textbook(word, 4, FIRST_MERGE_ID, min_frequency=1) == [(A, A), (A, B), (Z, Y), (A, C)]
    # Counts weight the pairs: "cd" three times (3) beats "abab" once ((a,b) twice); then "abab" -> Y Y, once.
    words = {(A, B, A, B): 1, (C, D): 3}
    assert bpe.train_merges_textbook(words, 10, FIRST_MERGE_ID) == [(C, D), (A, B)]
    assert bpe.train_merges_textbook(words, 10, FIRST_MERGE_ID, min_frequency=1) == [(C, D), (A, B), (Y, Y)]
    assert bpe.train_merges_textbook(words, 1, FIRST_MERGE_ID) == [(C, D)]  # n_merges is an upper bound


@given(st.lists(small_text, max_size=6), st.integers(1, 3), st.integers(FIRST_MERGE_ID, FIRST_MERGE_ID + 40),
       st.integers(0, 4))
def test_fast_trainer_equals_textbook_loop(texts, repeats, vocab_size, min_frequency):
    texts = texts * repeats  # repeated texts: counts above 1 and more ties
    words = word_counts_of(texts)
    assert count_chunks(texts) == words
    textbook = bpe.train_merges_textbook(words, vocab_size - FIRST_MERGE_ID, FIRST_MERGE_ID, min_frequency)
    assert textbook == reference_merges(words, vocab_size - FIRST_MERGE_ID, FIRST_MERGE_ID, min_frequency)
    assert bpe.train_merges(words, vocab_size - FIRST_MERGE_ID, FIRST_MERGE_ID, min_frequency) == textbook
    assert BPETokenizer.train(texts, vocab_size=vocab_size, min_frequency=min_frequency).merges == textbook


# Words over a 3-symbol alphabet with arbitrary counts: long runs ("0 0 0 0"), back-to-back pairs, many ties.
random_words = st.dictionaries(st.lists(st.integers(0, 2), max_size=12).map(tuple), st.integers(1, 50), max_size=8)


@given(random_words, st.integers(0, 30), st.integers(3, 6), st.integers(0, 60))
def test_textbook_loop_equals_the_reference_on_random_words(words, n_merges, first_id, min_frequency):
    # The library's textbook loop against the independent one above: the oracle for both trainers.
    assert (bpe.train_merges_textbook(words, n_merges, first_id, min_frequency)
            == reference_merges(words, n_merges, first_id, min_frequency))


@given(random_words, st.integers(0, 30), st.integers(3, 6), st.integers(0, 60))
def test_train_merges_equals_textbook_on_random_words(words, n_merges, first_id, min_frequency):
    textbook = bpe.train_merges_textbook(words, n_merges, first_id, min_frequency)
    assert bpe.train_merges(words, n_merges, first_id, min_frequency) == textbook
    assert len(textbook) <= n_merges and len(set(textbook)) == len(textbook)


@pytest.mark.parametrize("train", [bpe.train_merges, bpe.train_merges_textbook])
def test_trainers_reject_bad_input(train):
    with pytest.raises(ValueError, match="first_id"):
        train({(1, 5): 2}, 3, first_id=5)  # id 5 would collide with the first merged token
    with pytest.raises(ValueError, match="counts"):
        train({(1, 2): 0}, 3, first_id=5)
    with pytest.raises(ValueError, match="n_merges"):
        train({(1, 2): 2}, -1, first_id=5)
    assert train({(1, 2): 2, (3,): 9, (): 4}, 3, first_id=5) == [(1, 2)]


@given(st.lists(small_text, min_size=1, max_size=6), st.randoms())
def test_training_does_not_depend_on_text_order(texts, rnd):
    shuffled = list(texts)
    rnd.shuffle(shuffled)
    assert BPETokenizer.train(texts, 300).merges == BPETokenizer.train(shuffled, 300).merges


@given(any_text)
def test_pattern_splits_losslessly(text):
    assert "".join(re.findall(PATTERN, text)) == text


def test_pattern_chunks_turkish_text_as_words():
    chunks = re.findall(PATTERN, "Türkiye'nin 1982 Anayasası  i̇lk madde!!\r\n")
    assert chunks == ["Türkiye", "'nin", " 198", "2", " Anayasası", " ", " i̇lk", " madde", "!!\r\n"]


@given(any_text)
def test_decode_inverts_encode_for_every_string(turkish_tok, text):
    ids = turkish_tok.encode(text)
    assert all(3 <= i < turkish_tok.vocab_size for i in ids)  # no special token appears by accident
    assert turkish_tok.decode(ids) == text


@pytest.mark.parametrize("text", [
    "ı İ ş Ş ğ Ğ ü Ü ö Ö ç Ç", "i̇", "İ".lower(), "👩‍⚖️ ⚖", "憲法 第一条", "a\r\nb\rc\n", "\x00nul\x00",
    "\ud800", "x\udfffy", "\ud83d\ude00", "", " ", "<eos>", "<pad><bos>",
])
def test_round_trip_edge_cases(turkish_tok, text):
    assert turkish_tok.decode(turkish_tok.encode(text)) == text


@given(any_text)
def test_merges_never_cross_chunk_boundaries(turkish_tok, text):
    per_chunk = [i for chunk in re.findall(PATTERN, text) for i in turkish_tok.encode(chunk)]
    assert turkish_tok.encode(text) == per_chunk


def ranks_of(merges):
    """Merge ranks as the tokenizer defines them, written out here: the i-th merge makes token FIRST_MERGE_ID + i."""
    return {pair: FIRST_MERGE_ID + i for i, pair in enumerate(merges)}


@pytest.mark.parametrize("merge", [merge_chunk_textbook, merge_chunk])
def test_merge_chunk_by_hand(merge):
    Z, Y, X = FIRST_MERGE_ID, FIRST_MERGE_ID + 1, FIRST_MERGE_ID + 2
    # Overlapping pairs merge from the left: "aaa" -> Z a; "aaaa" -> Z Z, then (Z, Z) -> Y.
    assert merge([A, A, A], ranks_of([(A, A)])) == [Z, A]
    assert merge([A, A, A, A], ranks_of([(A, A), (Z, Z)])) == [Y]
    assert merge([A, A, A, A, A], ranks_of([(A, A), (Z, A), (Z, Z)])) == [Z, Y]  # aa aa a: Z Z a -> Z (Z a)
    # The earliest merge wins wherever it is: in "abc", (b, c) before (a, b) gives a Z, the reverse gives Z c.
    assert merge([A, B, C], ranks_of([(B, C), (A, B)])) == [A, Z]
    assert merge([A, B, C], ranks_of([(A, B), (B, C)])) == [Z, C]
    # A merge found only after two others have made its parts: (a b)(c d) -> Z Y -> X.
    assert merge([A, B, C, D, A], ranks_of([(A, B), (C, D), (Z, Y)])) == [X, A]
    assert merge([], ranks_of([(A, A)])) == [] and merge([A], ranks_of([(A, A)])) == [A]
    ids = [A, B, A]
    merge(ids, ranks_of([(A, B)]))
    assert ids == [A, B, A]  # the caller's list is not changed


# Runs of repeated pieces ("aaaa", "ıııı", "abab") next to Turkish letters, emoji, a lone surrogate and spaces:
# long overlapping runs, many equal pairs, and merges inside multi-byte characters.
PIECES = ["a", "b", "ab", "aab", "ı", "İ", "ş", "ğı", "😀", "\ud800", " ", " a", "1"]
runs_text = st.lists(st.tuples(st.sampled_from(PIECES), st.integers(1, 40)), max_size=10).map(
    lambda runs: "".join(piece * count for piece, count in runs))


@st.composite
def random_merges(draw, texts):
    """Up to 30 well-formed merges (each made of bytes or earlier merges) among the byte ids of `texts`; unlike
    trained merges, their order is arbitrary, so any pair may outrank any other."""
    ids = sorted({b + 3 for text in texts for b in text.encode("utf-8", "surrogatepass")}) or [A]
    merges = []
    for _ in range(draw(st.integers(0, 30))):
        pair = (draw(st.sampled_from(ids)), draw(st.sampled_from(ids)))
        if pair not in merges:
            merges.append(pair)
            ids.append(FIRST_MERGE_ID + len(merges) - 1)
    return merges


@given(st.data(), st.lists(st.one_of(runs_text, any_text), min_size=1, max_size=3), st.integers(0, 40))
def test_fast_encoding_equals_textbook_loop(data, texts, n_trained):
    text = "".join(texts)
    trained = BPETokenizer.train(texts, vocab_size=FIRST_MERGE_ID + n_trained, min_frequency=1).merges
    for merges in (trained, data.draw(random_merges(texts))):
        # the whole text as one chunk (the functions), and split by the pattern (the tokenizer, both paths)
        byte_ids = [b + 3 for b in text.encode("utf-8", "surrogatepass")]
        assert merge_chunk(byte_ids, ranks_of(merges)) == merge_chunk_textbook(byte_ids, ranks_of(merges))
        ids = BPETokenizer(merges).encode(text)
        assert ids == BPETokenizer(merges, textbook=True).encode(text)
        assert BPETokenizer(merges).decode(ids) == text


def test_fast_encoding_equals_textbook_loop_on_long_words():
    # One-word chunks of a few thousand bytes: long enough for deep merges, short enough for the O(n^2) loop.
    tok = BPETokenizer.train(["ı" * 512, "a" * 512, "ab" * 256, "aab" * 128] * 2, vocab_size=FIRST_MERGE_ID + 60)
    textbook = BPETokenizer(tok.merges, textbook=True)
    for word in ["ı" * 1500, "a" * 3001, "ab" * 1500 + "a", "aab" * 1000, "ı" * 700 + "i" + "ı" * 701,
                 "a" * 1000 + "ab" * 500 + "aab" * 333 + "ı" * 999]:
        assert re.findall(PATTERN, word) == [word]  # one chunk, as in the 50 MB one-word line
        ids = tok.encode(word)
        assert ids == textbook.encode(word)
        assert tok.decode(ids) == word
        assert len(ids) < len(word.encode("utf-8")) / 20  # the runs did merge deeply


def test_training_compresses_turkish(turkish_tok):
    text = "Türkiye Cumhuriyeti bir hukuk Devletidir."
    assert len(turkish_tok.encode(text)) < len(text.encode("utf-8")) / 2


def test_special_tokens_are_fixed_and_only_explicit(turkish_tok):
    assert (turkish_tok.pad_id, turkish_tok.bos_id, turkish_tok.eos_id) == (0, 1, 2)
    plain = turkish_tok.encode("a<eos>b")
    assert 2 not in plain and turkish_tok.decode(plain) == "a<eos>b"
    special = turkish_tok.encode("a<eos>b", allow_special=True)
    assert special.count(2) == 1 and special == turkish_tok.encode("a") + [2] + turkish_tok.encode("b")
    assert turkish_tok.decode(special) == "ab"  # specials are skipped by default
    assert turkish_tok.decode(special, skip_special=False) == "a<eos>b"


def test_decode_of_invalid_utf8_replaces_instead_of_raising(turkish_tok):
    lone_continuation_byte = 0x80 + 3
    assert turkish_tok.decode([A, lone_continuation_byte, B]) == "a\ufffdb"
    with pytest.raises(ValueError, match="outside the vocabulary"):
        turkish_tok.decode([turkish_tok.vocab_size])


def test_encode_batch_equals_encode(turkish_tok):
    texts = ["Anayasa madde 1", "", "ılık şişe"]
    assert turkish_tok.encode_batch(texts) == [turkish_tok.encode(t) for t in texts]


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="vocab_size"):
        BPETokenizer.train(["abc"], vocab_size=100)
    with pytest.raises(TypeError, match="iterable of str"):
        BPETokenizer.train("abc", vocab_size=300)
    with pytest.raises(TypeError, match="str"):
        BPETokenizer.train(["ok", 3], vocab_size=300)


@given(any_text)
def test_save_load_gives_identical_ids(turkish_tok, tmp_path_factory, text):
    path = tmp_path_factory.mktemp("tok") / "tokenizer.bpe"
    turkish_tok.save(path)
    loaded = BPETokenizer.load(path)
    assert loaded.merges == turkish_tok.merges
    assert loaded.encode(text) == turkish_tok.encode(text)


def test_saved_file_is_readable_and_versioned(turkish_tok, tmp_path):
    path = tmp_path / "tokenizer.bpe"
    turkish_tok.save(path)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "minillm-bpe 1"
    assert lines[2] == f"merges {len(turkish_tok.merges)}"
    assert lines[-1] == "end"
    assert [p.name for p in tmp_path.iterdir()] == ["tokenizer.bpe"]  # the temporary file was renamed, not left


def test_failed_save_leaves_the_old_file(turkish_tok, tmp_path, monkeypatch):
    path = tmp_path / "tokenizer.bpe"
    BPETokenizer.train(["aaabdaaabac"], vocab_size=FIRST_MERGE_ID + 1).save(path)
    before = path.read_text(encoding="utf-8")

    def disk_error(fd):
        raise OSError("simulated I/O error before the rename")

    monkeypatch.setattr(os, "fsync", disk_error)  # the write fails after the new contents were written out
    with pytest.raises(OSError, match="simulated"):
        turkish_tok.save(path)
    assert path.read_text(encoding="utf-8") == before  # neither truncated nor half-written
    assert [p.name for p in tmp_path.iterdir()] == ["tokenizer.bpe"]


def _corrupt(lines, how):
    if how == "truncated":
        return lines[: len(lines) // 2]
    if how == "no_end":
        return lines[:-1]
    if how == "wrong_version":
        return ["minillm-bpe 2"] + lines[1:]
    if how == "other_format":
        return ["#version: 0.2"] + lines[1:]
    if how == "not_an_int":
        return lines[:5] + ["12 x"] + lines[6:]
    if how == "superscript_digit":      # "²".isdigit() is True, but int("²3") fails
        return lines[:5] + ["\u00b23 4"] + lines[6:]
    if how == "forward_reference":
        return lines[:3] + [f"{FIRST_MERGE_ID + 5} 100"] + lines[4:]
    if how == "duplicate":
        return lines[:4] + [lines[3]] + lines[5:]
    if how == "bad_pattern":
        return lines[:1] + ['pattern "(unclosed"'] + lines[2:]
    if how == "trailing":
        return lines + ["100 101"]
    raise AssertionError(how)


@pytest.mark.parametrize("how,message", [
    ("truncated", "truncated"), ("no_end", "expected 'end'"), ("wrong_version", "minillm-bpe 1"),
    ("other_format", "expected the header"), ("not_an_int", "two token ids"),
    ("superscript_digit", "two token ids"), ("forward_reference", "earlier merge"),
    ("duplicate", "appears twice"), ("bad_pattern", "pre-tokenisation pattern"), ("trailing", "after 'end'"),
])
def test_load_rejects_damaged_files_with_clear_errors(turkish_tok, tmp_path, how, message):
    good = tmp_path / "good.bpe"
    turkish_tok.save(good)
    bad = tmp_path / "bad.bpe"
    bad.write_text("\n".join(_corrupt(good.read_text(encoding="utf-8").split("\n")[:-1], how)) + "\n",
                   encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape(str(bad))) as info:
        BPETokenizer.load(bad)
    assert message in str(info.value)


def test_load_missing_or_binary_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        BPETokenizer.load(tmp_path / "nope.bpe")
    binary = tmp_path / "binary.bpe"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ValueError, match="not UTF-8"):
        BPETokenizer.load(binary)
