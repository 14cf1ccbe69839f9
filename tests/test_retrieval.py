"""Specification of retrieval: Turkish words, BM25 (by hand, the textbook loop, the vectorised index), the
passages of the Constitution and of the training pairs, the search, the encoder input, and no leakage.

The BM25 case small enough to compute on paper is test_bm25_by_hand; the vectorised index is proven equal to the
textbook formula by hypothesis; length normalisation and idf are pinned by properties a wrong formula breaks.
"""
import math

import pytest
import torch
from hypothesis import assume, example, given
from hypothesis import strategies as st

from minillm.batching import Seq2SeqDataset
from minillm.corpus import (Passage, article_passages, article_references, pair_passages, same_text,
                            training_corpus, windows)
from minillm.data import encode_source
from minillm.retrieval import BM25, Exclusion, Retriever, bm25_textbook, encoder_input, idf, terms

ARTICLES = [
    {"madde": 1, "baslik": "Devletin şekli", "metin": "Türkiye Devleti bir Cumhuriyettir.", "mulga": False},
    {"madde": 2, "baslik": "Cumhuriyetin nitelikleri", "metin": "Türkiye Cumhuriyeti demokratik, laik ve sosyal "
     "bir hukuk Devletidir.", "mulga": False},
    {"madde": 3, "baslik": "Devletin bütünlüğü", "metin": "Dili Türkçedir. Bayrağı al bayraktır. Başkenti "
     "Ankara'dır.", "mulga": False},
    {"madde": 4, "baslik": "Bölüm", "metin": "(Mülga: 21/1/2017-6771/16 md.)", "mulga": True},
]
PAIRS = [("Türkiye'nin başkenti neresidir?", "Başkent Ankara'dır."),
         ("Devletin dili nedir?", "Dili Türkçedir."),
         ("Türkiye laik bir devlet midir?", "Evet, Cumhuriyet laiktir."),
         ("Başkent hangi şehirdir?", "Başkent Ankara'dır.")]


# ---------------------------------------------------------------------------------------------------------
# Words

def test_terms_lowercase_the_turkish_way_and_cut_each_word_to_a_prefix():
    assert terms("Anayasanın 2. Maddesi NEYİ düzenler?") == ["anay", "2", "madd", "neyi", "düze"]
    assert terms("Anayasanın 2. Maddesi", prefix=5) == ["anaya", "2", "madde"]
    assert terms("GREV HAKKI", prefix=0) == terms("grev hakkı", prefix=0) == ["grev", "hakkı"]   # "I" is "ı"
    assert terms("İŞLETME", prefix=0) == ["işletme"]                                # "İ" is "i", no dot left
    assert terms("Türkiye'nin", prefix=0) == ["türkiye", "nin"]                     # the apostrophe separates


@given(st.text(max_size=60), st.integers(0, 8))
def test_every_term_is_letters_or_digits_within_the_prefix(text, prefix):
    for t in terms(text, prefix):
        assert t and all(c.isalnum() for c in t)
        assert prefix == 0 or len(t) <= prefix


# ---------------------------------------------------------------------------------------------------------
# BM25

def test_bm25_by_hand():
    """docs a b / a / c c d, query c: only the third scores. N = 3, n(c) = 1, tf = 2, |d| = 3, avgdl = 2:
    idf = ln(1 + 2.5/1.5) = ln(8/3); norm = 1.2 (1 - 0.75 + 0.75 · 3/2) = 1.65; score = idf · 2 · 2.2 / 3.65."""
    docs = [["a", "b"], ["a"], ["c", "c", "d"]]
    expected = [0.0, 0.0, math.log(8 / 3) * 4.4 / 3.65]
    assert bm25_textbook(["c"], docs) == pytest.approx(expected, abs=1e-12)
    assert BM25(docs).scores(["c"]).tolist() == pytest.approx(expected, abs=1e-12)


def test_idf_is_positive_even_for_a_word_in_every_document():
    assert idf(10, 10) > 0
    assert idf(10, 1) > idf(10, 5) > idf(10, 10)       # rarer words weigh more


WORDS = st.sampled_from(list("abcdefgh"))


@given(st.lists(st.lists(WORDS, min_size=1, max_size=12), min_size=1, max_size=10),
       st.lists(WORDS, max_size=6), st.floats(0.0, 3.0), st.floats(0.0, 1.0))
def test_vectorised_bm25_equals_the_textbook_formula(docs, query, k1, b):
    textbook = bm25_textbook(query, docs, k1, b)
    fast = BM25(docs, k1, b).scores(query)
    assert fast.dtype == torch.float64 and fast.shape == (len(docs),)
    assert fast.tolist() == pytest.approx(textbook, rel=1e-12, abs=1e-12)


@given(st.integers(1, 4), st.integers(1, 20))
@example(tf=1, extra=5)
def test_length_normalisation_lowers_a_longer_document(tf, extra):
    """The same count of the query word in a longer document scores lower when b > 0, and the same when b = 0."""
    short, long = ["q"] * tf + ["x"], ["q"] * tf + ["x"] * (1 + extra)
    docs = [short, long, ["y", "z"]]
    with_b = BM25(docs, b=0.75).scores(["q"])
    without_b = BM25(docs, b=0.0).scores(["q"])
    assert with_b[0] > with_b[1] > 0
    assert without_b[0] == pytest.approx(float(without_b[1]))


def test_bm25_saturates_repeats():
    """A second occurrence adds less than the first (k1): the score is concave in tf and bounded by idf·(k1+1)."""
    docs = [["q"] * tf + ["x"] * (9 - tf) for tf in range(1, 5)] + [["y"] * 9]
    s = BM25(docs, b=0.0).scores(["q"]).tolist()
    gains = [s[0]] + [s[i + 1] - s[i] for i in range(3)]
    assert all(g1 > g2 > 0 for g1, g2 in zip(gains, gains[1:]))


def test_unknown_and_empty_queries_score_zero():
    index = BM25([["a"], ["b"]])
    assert index.scores(["zzz"]).tolist() == [0.0, 0.0]
    assert index.scores([]).tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="no documents"):
        BM25([])


# ---------------------------------------------------------------------------------------------------------
# Passages

@given(st.integers(0, 40), st.integers(1, 12), st.data())
def test_windows_cover_every_word_keep_the_order_and_overlap(n, size, data):
    stride = data.draw(st.integers(1, size))
    words = [f"w{i}" for i in range(n)]
    parts = windows(words, size, stride)
    assert all(len(p) <= size for p in parts)
    assert sorted({w for p in parts for w in p}, key=lambda w: int(w[1:])) == words
    assert parts[-1][-1:] == words[-1:]
    for p in parts:                                       # each window is a contiguous run of the text
        assert p == words[words.index(p[0]):words.index(p[0]) + len(p)] if p else True
    if n > size:
        assert all(len(p) == size for p in parts)


def test_every_window_of_an_article_keeps_its_number_and_heading():
    long = {"madde": 7, "baslik": "Uzun madde", "metin": " ".join(f"kelime{i}" for i in range(130)), "mulga": False}
    parts = article_passages([long], size=60, stride=45)
    assert [p.id for p in parts] == ["md7.1", "md7.2", "md7.3"]
    assert all(p.text.startswith("Anayasa madde 7, Uzun madde: ") and p.article == 7 for p in parts)
    repealed = article_passages(ARTICLES)[-1]
    assert repealed.text.startswith("Anayasa madde 4 (mülga): (Mülga") and repealed.heading == "mülga"
    assert repealed.label() == "Anayasa md. 4 — mülga"


@pytest.mark.parametrize("text, numbers", [
    ("Anayasanın 2. maddesi neyi düzenler?", [2]),
    ("Anayasa madde 101, cumhurbaşkanının seçilme koşulları", [101]),
    ("ANAYASANIN 25. MADDESİ ile 26. maddesi", [25, 26]),
    ("Disiplin cezası verilemez. (madde 129)", [129]),
    ("Anayasa md. 2 ve 3 üncü madde", [2, 3]),
    ("6 ncı maddesiyle", [6]),
    ("Geçici madde 20 ne zaman eklendi?", []),
    ("1982 yılında kabul edildi", []),
])
def test_article_references(text, numbers):
    assert article_references(text) == numbers


# ---------------------------------------------------------------------------------------------------------
# Search and the encoder input

def corpus():
    return training_corpus(ARTICLES, PAIRS)


def test_a_named_article_comes_first_then_bm25_articles_then_training_answers():
    retriever = Retriever(corpus(), articles=2, pairs=1)
    hits = retriever.search("Anayasanın 1. maddesi neyi düzenler? Başkent Ankara")
    assert [h.passage.id for h in hits][:1] == ["md1"] and hits[0].how == "reference"
    assert hits[1].passage.id == "md3" and hits[1].how == "bm25"              # "başkent", "ankara"
    assert hits[2].passage.pair is not None and len(hits) == 3


def test_a_question_that_matches_nothing_gets_no_passage():
    assert Retriever(corpus()).search("xyzzy qwerty") == []


def test_duplicate_passage_ids_are_refused():
    p = Passage(id="md1", text="a", key="a", heading="h", article=1)
    with pytest.raises(ValueError, match="duplicate passage ids: md1"):
        Retriever([p, p])


@given(st.text(min_size=1, max_size=200), st.integers(2, 80))
def test_the_encoder_input_never_cuts_the_question_for_a_passage(tiny_tokenizer, question, max_src_len):
    assume(question.strip())
    alone, cut_alone = encode_source(tiny_tokenizer, question, max_src_len)
    src, cut, hits = encoder_input(tiny_tokenizer, question, max_src_len, Retriever(corpus()))
    assert src[:len(alone)] == alone and cut == cut_alone                   # the question part is untouched
    assert len(src) <= max_src_len and src[-1] == tiny_tokenizer.eos_id
    # each passage after the question is closed by <eos>: one separator per passage given
    assert src.count(tiny_tokenizer.eos_id) == alone.count(tiny_tokenizer.eos_id) + len(hits)


def test_the_encoder_input_reads_question_then_passages(tiny_tokenizer):
    retriever = Retriever(corpus(), articles=1, pairs=1)
    question = "Anayasanın 3. maddesi neyi düzenler?"
    src, _, hits = encoder_input(tiny_tokenizer, question, 500, retriever)
    eos = [tiny_tokenizer.eos_id]
    expected = tiny_tokenizer.encode(question) + eos
    for h in hits:
        expected += tiny_tokenizer.encode(h.passage.text) + eos
    assert src == expected and [h.passage.id for h in hits][:1] == ["md3"]
    assert encoder_input(tiny_tokenizer, question, 500) == (encode_source(tiny_tokenizer, question, 500) + ([],))


# ---------------------------------------------------------------------------------------------------------
# No leakage

def test_a_training_pair_never_retrieves_its_own_answer(tiny_tokenizer):
    """Every question's best BM25 answer is its own (the keys are the questions): with own_pairs the dataset
    must give each pair another passage; without it (the leak), each pair reads its own answer."""
    retriever = Retriever(training_corpus(ARTICLES, PAIRS), articles=0, pairs=2)
    guarded = Seq2SeqDataset(PAIRS, tiny_tokenizer, 200, 64, retriever, own_pairs=True)
    for i, (hits, (_, answer)) in enumerate(zip(guarded.hits, PAIRS)):
        assert all(h.passage.pair != i and same_text(h.passage.text) != same_text(answer) for h in hits)
    leaky = Seq2SeqDataset(PAIRS, tiny_tokenizer, 200, 64, retriever, own_pairs=False)
    assert [hits[0].passage.pair for hits in leaky.hits] == [0, 1, 2, 3]


def test_a_passage_with_the_same_text_as_the_answer_is_excluded_too():
    """Pairs 0 and 3 share their answer: pair 0 may not read pair 3's passage (nor its own)."""
    retriever = Retriever(training_corpus(ARTICLES, PAIRS), articles=0, pairs=5)
    banned = retriever.excluded(Exclusion(pair=0, text=PAIRS[0][1]))
    assert banned == {"pair0", "pair3"}
    ids = [h.passage.id for h in retriever.search(PAIRS[0][0], Exclusion(pair=0, text=PAIRS[0][1]))]
    assert "pair0" not in ids and "pair3" not in ids and ids


def test_validation_answers_are_never_in_the_corpus():
    val = [("Başkentimiz neresi?", "başkent  ANKARA'dır.")]              # equal after cleaning and lowercasing
    passages = training_corpus(ARTICLES, PAIRS, val)
    texts = {same_text(p.text) for p in passages}
    assert same_text(val[0][1]) not in texts
    assert {p.pair for p in passages if p.pair is not None} == {1, 2}        # pairs 0 and 3 are withheld
    assert len(pair_passages(PAIRS)) == 4
