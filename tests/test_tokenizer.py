"""Specification of minillm.tokenizer: byte-level BPE.

The reference trainer below is the textbook loop (recount every pair after every merge); the fast, incremental
trainer must learn exactly the same merges.
"""
import re

import pytest
from hypothesis import given, strategies as st

from minillm.tokenizer import FIRST_MERGE_ID, PATTERN, BPETokenizer

A, B, C, D = (ord(ch) + 3 for ch in "abcd")  # byte token id = byte value + 3

# Text drawn from a small alphabet produces many repeated pairs, ties and overlapping runs ("aaa");
# the Turkish letters are two bytes in UTF-8, so merges inside a character are exercised too.
small_text = st.text(alphabet="aab ıİşğ\n1'.", max_size=40)
any_char = st.one_of(st.characters(), st.integers(0xD800, 0xDFFF).map(chr))  # includes lone surrogates
any_text = st.text(alphabet=any_char, max_size=60)


def naive_train(texts, vocab_size, min_frequency=2):
    """The textbook BPE loop, kept here as the reference: recount all pairs after every merge."""
    chunks = [list(c.encode("utf-8", "surrogatepass")) for t in texts for c in re.findall(PATTERN, t)]
    words = [[b + 3 for b in c] for c in chunks]
    merges = []
    while FIRST_MERGE_ID + len(merges) < vocab_size:
        counts = {}
        for w in words:
            for pair in zip(w, w[1:]):
                counts[pair] = counts.get(pair, 0) + 1
        if not counts:
            break
        # highest count first; among equal counts the smallest (left, right)
        best = min(counts, key=lambda p: (-counts[p], p))
        if counts[best] < min_frequency:
            break
        new_id = FIRST_MERGE_ID + len(merges)
        merges.append(best)
        merged_words = []
        for w in words:
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == best:
                    out.append(new_id)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            merged_words.append(out)
        words = merged_words
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


@given(st.lists(small_text, max_size=6), st.integers(FIRST_MERGE_ID, FIRST_MERGE_ID + 40), st.integers(1, 3))
def test_fast_trainer_equals_textbook_loop(texts, vocab_size, min_frequency):
    fast = BPETokenizer.train(texts, vocab_size=vocab_size, min_frequency=min_frequency)
    assert fast.merges == naive_train(texts, vocab_size, min_frequency)


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
    assert not list(tmp_path.glob("*.tmp*"))  # the temporary file was renamed, not left behind


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
    ("other_format", "expected the header"), ("not_an_int", "two token ids"), ("forward_reference", "earlier merge"),
    ("duplicate", "appears twice"), ("bad_pattern", "regular expression"), ("trailing", "after 'end'"),
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
