"""What the model should read: Okapi BM25 over Turkish words, and the encoder input it makes.

    retriever = Retriever(passages)                         # passages: minillm.corpus
    hits = retriever.search("Anayasanın 2. maddesi neyi düzenler?")
    src_ids, cut, hits = encoder_input(tok, question, max_src_len=128, retriever=retriever)
    # src_ids = question <eos> passage 1 <eos> passage 2 <eos> ...

Four steps, each below:

1. **Words.** ``terms``: the text cleaned and lowercased the Turkish way ("I" -> "ı"), split into
   words, and each word cut to its first 4 characters. Turkish glues suffixes to the stem
   ("maddesinin", "maddeleri"); a fixed prefix is a crude stemmer that works about as well as a real
   one for retrieval (Can et al. 2008, "Information retrieval on Turkish texts"; the prefix length
   was chosen by bench/retrieval.py on the training questions).
2. **BM25** (Robertson & Zaragoza 2009): a passage scores for each query word it contains, more for
   a rare word (idf), more for repeats but with diminishing returns (k1), and less in a long passage
   (b). Written twice: ``bm25_textbook``, the formula as loops, and ``BM25``, the same numbers from
   one gather and one index_add.
3. **Search.** ``Retriever.search``: an article the question names ("madde 101", "25. maddesi") is
   looked up directly; the other places go to the best BM25 articles, then to the best training
   answers.
4. **The encoder input.** ``encoder_input``: the one function that turns a question into the
   encoder's ids, for training, evaluation and answering alike. The question is never cut for a
   passage's sake.

LEAKAGE. A training pair's own answer is in the corpus (every training answer is). If the pair could
retrieve it, the model would learn to copy the answer from its input, and would have nothing to copy
from on a new question. So a training pair never retrieves its own passage, nor any passage with the
same text (``Exclusion``); validation answers are kept out of the corpus altogether
(corpus.training_corpus).
"""
from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass

import torch

from minillm.corpus import Passage, article_references, same_text
from minillm.data import encode_source, turkish_lower

# characters kept of each word (Can et al. 2008 used 5; 4 found the cited article most often here)
STEM_PREFIX = 4
# term-frequency saturation: the 2nd occurrence of a word adds less than the 1st (R&Z 2009, §3.4)
K1 = 1.2
# length normalisation: 0 = none, 1 = full (R&Z 2009, §3.4); both the usual values
B = 0.75
# tokens: a passage is given only when at least this much of it fits in the source
MIN_ROOM = 8

# a run of letters and digits: punctuation and apostrophes separate words
WORD = re.compile(r"[^\W_]+")


def terms(text: str, prefix: int = STEM_PREFIX) -> list[str]:
    """The words BM25 compares: Turkish-lowercased, split on anything but letters and digits, each
    cut to its first ``prefix`` characters (0 = whole words).

        terms("Anayasanın 2. Maddesi NEYİ düzenler?")  ->  ["anay", "2", "madd", "neyi", "düze"]
    """
    words = WORD.findall(turkish_lower(text))
    return [w[:prefix] for w in words] if prefix > 0 else words


# --------------------------------------------------------------------------------------------------
# BM25: the textbook formula, then the vectorised one
# --------------------------------------------------------------------------------------------------

def idf(n_docs: int, doc_freq: int) -> float:
    """Inverse document frequency of a word found in doc_freq of n_docs passages.

    Robertson & Zaragoza 2009, eq. 3.3, is log((N - n + 0.5) / (n + 0.5)): negative for a word in
    more than half the passages, so a common word would LOWER a passage's score. We add 1 inside the
    log, as Lucene does: every idf is then positive and a common word just counts for little."""
    return math.log(1.0 + (n_docs - doc_freq + 0.5) / (doc_freq + 0.5))


def bm25_textbook(query: list[str], docs: list[list[str]], k1: float = K1,
                  b: float = B) -> list[float]:
    """The BM25 score of every doc for the query, by the formula (R&Z 2009, eq. 3.15), loop by loop:

        score(d) = sum over distinct query words w in d of
                   idf(w) · tf(w, d) · (k1 + 1) / (tf(w, d) + k1 · (1 - b + b · |d| / avgdl))

    tf(w, d): how often w occurs in d; |d|: d's length in words; avgdl: the mean length. A word
    repeated in the query counts once. Slow (every doc, every word) and plain: the reference for
    ``BM25``."""
    n_docs = len(docs)
    avgdl = sum(len(d) for d in docs) / n_docs
    doc_freq = Counter(w for d in docs for w in set(d))
    scores = []
    for d in docs:
        tf = Counter(d)
        score = 0.0
        for w in set(query):
            if tf[w] > 0:
                # a long doc needs more repeats to score as high
                norm = k1 * (1 - b + b * len(d) / avgdl)
                score += idf(n_docs, doc_freq[w]) * tf[w] * (k1 + 1) / (tf[w] + norm)
        scores.append(score)
    return scores


class BM25:
    """BM25 as an inverted index: each (word, doc) pair that occurs, with its sum term precomputed.

    Scoring a query is then one gather and one add: keep the postings whose word is in the query
    (``torch.isin``), and add their weights into their docs' scores (``index_add_``). The cost grows
    with the postings of the query's words, not with the number of docs times words as in the
    textbook loop. The numbers are the textbook's (tests/test_retrieval.py proves it with
    hypothesis), in float64."""

    def __init__(self, docs: list[list[str]], k1: float = K1, b: float = B):
        if not docs:
            raise ValueError("BM25: no documents to index")
        self.n_docs = len(docs)
        avgdl = sum(len(d) for d in docs) / self.n_docs
        self.vocab: dict[str, int] = {}                 # word -> column
        doc_ids, word_ids, tfs, lengths = [], [], [], []
        for i, d in enumerate(docs):
            for w, tf in Counter(d).items():
                doc_ids.append(i)
                word_ids.append(self.vocab.setdefault(w, len(self.vocab)))
                tfs.append(tf)
                lengths.append(len(d))
        self.post_doc = torch.tensor(doc_ids, dtype=torch.long)     # (P,) one entry per posting
        self.post_word = torch.tensor(word_ids, dtype=torch.long)   # (P,)
        tf = torch.tensor(tfs, dtype=torch.float64)                 # (P,)
        doc_len = torch.tensor(lengths, dtype=torch.float64)        # (P,)
        # (W,) docs per word
        doc_freq = torch.bincount(self.post_word, minlength=len(self.vocab)).double()
        word_idf = torch.log1p((self.n_docs - doc_freq + 0.5) / (doc_freq + 0.5))  # (W,) see idf()
        norm = k1 * (1 - b + b * doc_len / avgdl)                   # (P,)
        self.post_weight = word_idf[self.post_word] * tf * (k1 + 1) / (tf + norm)  # (P,)

    def scores(self, query: list[str]) -> torch.Tensor:
        """(N,) float64: every doc's BM25 score for the query; words never indexed add nothing."""
        ids = torch.tensor(sorted({self.vocab[w] for w in query if w in self.vocab}),
                           dtype=torch.long)
        hit = torch.isin(self.post_word, ids)       # (P,) postings of the query's words
        out = torch.zeros(self.n_docs, dtype=torch.float64)
        return out.index_add_(0, self.post_doc[hit], self.post_weight[hit])


# --------------------------------------------------------------------------------------------------
# Search
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Hit:
    """A passage given to the model, with why: ``how`` is "reference" (the question names its
    article) or "bm25"; ``score`` is its BM25 score for the question (0.0 for a named article that
    shares no word). ``hit.id``, ``hit.article``, ``hit.pair`` and ``hit.heading`` are the passage's
    own."""
    passage: Passage
    score: float
    how: str

    @property
    def id(self) -> str:
        return self.passage.id

    @property
    def article(self) -> int | None:
        return self.passage.article

    @property
    def pair(self) -> int | None:
        return self.passage.pair

    @property
    def heading(self) -> str:
        return self.passage.heading


@dataclass(frozen=True)
class Exclusion:
    """What one training pair must not retrieve: its own passage (``pair``) and any passage whose
    text is the same as its answer (``text``). See LEAKAGE above."""
    pair: int | None = None
    text: str | None = None


def key_index(passages: list[Passage], prefix: int, k1: float, b: float) -> BM25 | None:
    """A BM25 index of the passages' keys; None for no passages (BM25 refuses an empty corpus)."""
    if not passages:
        return None
    return BM25([terms(p.key, prefix) for p in passages], k1, b)


class Retriever:
    """BM25 over passages: ``articles`` places for the law, ``pairs`` for training answers.

    Articles and training pairs are indexed apart: a long article and a one-line question are not
    comparable documents (different lengths, different words), and apart each kind gets its own
    number of places."""

    def __init__(self, passages: list[Passage], articles: int = 2, pairs: int = 1,
                 prefix: int = STEM_PREFIX, k1: float = K1, b: float = B):
        ids = Counter(p.id for p in passages)
        twice = sorted(i for i, n in ids.items() if n > 1)
        if twice:
            raise ValueError(f"the corpus holds duplicate passage ids: {', '.join(twice[:5])}")
        if articles < 0 or pairs < 0:
            raise ValueError(f"the number of passages to retrieve must be >= 0, "
                             f"got {articles} and {pairs}")
        self.articles, self.pairs = articles, pairs   # how many of each kind to retrieve
        self.prefix = prefix
        self.k1, self.b = k1, b
        self.law = [p for p in passages if p.article is not None]
        self.answers = [p for p in passages if p.article is None]
        self.law_index = key_index(self.law, prefix, k1, b)
        self.answer_index = key_index(self.answers, prefix, k1, b)
        self.first_window = {}      # article number -> index of its first passage
        for i, p in enumerate(self.law):
            self.first_window.setdefault(p.article, i)
        self.same = {}              # same_text(text) -> passage ids with that text
        for p in passages:
            self.same.setdefault(same_text(p.text), set()).add(p.id)

    def excluded(self, exclude: Exclusion | None) -> set[str]:
        """The passage ids ``exclude`` rules out."""
        if exclude is None:
            return set()
        out = set()
        if exclude.text is not None:
            out = set(self.same.get(same_text(exclude.text), ()))
        if exclude.pair is not None:
            out.add(f"pair{exclude.pair}")
        return out

    def search(self, question: str, exclude: Exclusion | None = None) -> list[Hit]:
        """The passages for ``question``, in the order the encoder reads them: the articles it names
        (their first window), then the best BM25 articles, then the best BM25 training answers. A
        passage that shares no word with the question (score 0) is never given by BM25; none at all
        is a possible answer."""
        query = terms(question, self.prefix)
        banned = self.excluded(exclude)
        hits: list[Hit] = []
        if self.law_index is not None and self.articles > 0:
            scores = self.law_index.scores(query)                       # (N_law,)
            for number in article_references(question):
                i = self.first_window.get(number)
                if i is not None and self.law[i].id not in banned and len(hits) < self.articles:
                    hits.append(Hit(self.law[i], float(scores[i]), "reference"))
            taken = banned | {h.passage.id for h in hits}
            hits += self.best(self.law, scores, self.articles - len(hits), taken)
        if self.answer_index is not None and self.pairs > 0:
            hits += self.best(self.answers, self.answer_index.scores(query), self.pairs, banned)
        return hits

    @staticmethod
    def best(passages: list[Passage], scores: torch.Tensor, k: int, banned: set[str]) -> list[Hit]:
        """The k best passages scoring above 0, not banned; ties go to the earlier passage."""
        hits = []
        order = torch.sort(scores, descending=True, stable=True).indices.tolist()
        for i in order:
            if len(hits) >= k or scores[i] <= 0:
                break
            if passages[i].id not in banned:
                hits.append(Hit(passages[i], float(scores[i]), "bm25"))
        return hits


# --------------------------------------------------------------------------------------------------
# The encoder input: one definition for training, evaluation and answering
# --------------------------------------------------------------------------------------------------

def encoder_input(tokenizer, question: str, max_src_len: int, retriever: Retriever | None = None,
                  exclude: Exclusion | None = None) -> tuple[list[int], bool, list[Hit]]:
    """(src_ids, cut, hits): what the encoder reads for ``question``, whether the question itself
    was cut, and the passages it was given, in order.

        question <eos> passage 1 <eos> passage 2 <eos> ...
                                        (<eos> separates; there is no new special token)

    Without a retriever it is data.encode_source's question <eos>. The question comes first and is
    cut only if it alone is longer than the source; each passage then takes what room is left (a
    long one is cut at its end) and is left out when fewer than MIN_ROOM tokens remain. Training
    (minillm.batching), evaluation and answering (minillm.generation, the web API, the lesson
    printer) all call this, so the model is always asked in the form it learned from; ``exclude`` is
    given in training only (see LEAKAGE)."""
    src_ids, cut = encode_source(tokenizer, question, max_src_len)
    if retriever is None:
        return src_ids, cut, []
    given = []
    for hit in retriever.search(question, exclude):
        room = max_src_len - len(src_ids) - 1           # keep a place for the passage's <eos>
        if room < MIN_ROOM:
            break
        src_ids = src_ids + tokenizer.encode(hit.passage.text)[:room] + [tokenizer.eos_id]
        given.append(hit)
    return src_ids, cut, given
