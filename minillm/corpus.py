"""What the model may read: passages cut from the Constitution and from the training answers.

A model of a few million parameters trained on a thousand pairs cannot store the law: asked about an
article it has not seen, it writes another article's text, number and all. It can *read* the law
instead: before answering, minillm.retrieval finds the passages that match the question, and the
encoder reads them after the question. This module makes those passages; every passage knows where
it came from.

    # data/anayasa.json, one record per article
    articles = [{"madde": 2, "baslik": "Cumhuriyetin nitelikleri",
                 "metin": "Türkiye Cumhuriyeti, ...", "mulga": False}, ...]
    passages = article_passages(articles) + pair_passages(splits["train"])
    passages[1]
    # Passage(id="md2", text="Anayasa madde 2, Cumhuriyetin nitelikleri: Türkiye ...", article=2)
    article_references("Anayasanın 25. Maddesi neyi düzenler?")
    # [25]: looked up directly, not searched

Two kinds of passage:

* **articles**: heading + text, in the form "Anayasa madde N, heading: text" so that the number the
  answer must cite is in what the encoder reads. A long article is cut into overlapping windows of
  words; each window keeps the article's number and heading. A repealed (mülga) article says so
  instead of giving a heading.
* **training pairs**: the answer of pair i, found by its question. The nearest training question's
  answer is a strong baseline on its own (bench/README.md); given to the model, it shows the form an
  answer takes.

subtle: the training pairs' passages are the one place where an answer could leak into its own
input. Building the passages is innocent; minillm.retrieval.Retriever.search takes an exclusion, and
minillm.batching gives each training pair its own (its passage and any passage with the same text)
-- see LEAKAGE in minillm.retrieval.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from minillm.data import clean_text, turkish_lower

# A long article is cut into windows of this many words, each starting this many words after the
# previous one (so consecutive windows share WINDOW_WORDS - WINDOW_STRIDE words: a sentence cut by
# one is whole in the next). Chosen by bench/retrieval.py: see bench/README.md.
WINDOW_WORDS = 60
WINDOW_STRIDE = 45


@dataclass(frozen=True)
class Passage:
    """One thing the model may read. ``text`` is what the encoder reads; ``key`` is what retrieval
    matches the question against (the article's heading and text; a training pair's QUESTION, since
    questions are what resemble questions). ``article`` or ``pair`` says where it came from."""
    # "md2" (a whole article), "md159.3" (its third window), "pair17" (training pair 17)
    id: str
    text: str                  # what the encoder reads
    key: str                   # what BM25 indexes
    # the article's heading, or the training pair's question (for the page and the CLI)
    heading: str
    article: int | None = None  # the article number, for an article's passage
    pair: int | None = None     # the index in the training split, for a training pair's passage

    def label(self) -> str:
        """Where the passage came from, as a reader would cite it.

        Example: "Anayasa md. 2 — Cumhuriyetin nitelikleri"."""
        if self.article is not None:
            return f"Anayasa md. {self.article} — {self.heading}"
        return f"eğitim çifti {self.pair} — {self.heading}"


# --------------------------------------------------------------------------------------------------
# Passages from the Constitution
# --------------------------------------------------------------------------------------------------

def windows(words: list[str], size: int = WINDOW_WORDS,
            stride: int = WINDOW_STRIDE) -> list[list[str]]:
    """Overlapping windows of ``size`` words, ``stride`` apart; the last ends with the last word.

        windows("a b c d e f g".split(), size=4, stride=3)  ->  [[a b c d], [d e f g]]

    A text of at most ``size`` words is one window. Every word is in at least one window
    (stride <= size)."""
    if not 1 <= stride <= size:
        raise ValueError(f"window stride must be in [1, size = {size}], got {stride}")
    if len(words) <= size:
        return [words]
    starts = list(range(0, len(words) - size, stride)) + [len(words) - size]
    return [words[s:s + size] for s in starts]


# Amendment notes "(Değişik: 3/10/2001-4709/2 md.)", the source's elisions with their footnote
# numbers "(…)7", and the footnotes themselves, which the source lets run into the next article's
# text ("8 21/1/2017 tarihli ve 6771 sayılı Kanunun 1 inci maddesiyle, ... eklenmiştir.") or
# leaves as a bare number after a sentence ("kullanılır. 8"), are history, not law: left in, they
# stand between a heading and the sentence an answer repeats.
AMENDMENT_NOTE = re.compile(r"\((?:Değişik|Ek|Mülga|İptal)[^()]*\)\s*")
ELISION = re.compile(r"\s*\(…\)\s*\d*")
FOOTNOTE = re.compile(r"\s*(?:\d{1,3} )?\d{1,2}/\d{1,2}/\d{4} tarihli ve \d+ sayılı Kanunun .*?"
                      r"(?:eklenmiştir|çıkarılmıştır|çıkartılmıştır"
                      r"|değiştirilmiştir|kaldırılmıştır|işlenmiştir)\.")
FOOTNOTE_NUMBER = re.compile(r"(?<=[.;:])\s?\d{1,3}(?=\s+[A-ZÇĞİÖŞÜ(\d]|\s*$)")


def reading_text(text: str) -> str:
    """An article's text as the model reads it: cleaned, and the amendment notes, elisions and
    footnotes removed.

        reading_text("(Değişik: 3/10/2001-4709/2 md.) Temel hak ve hürriyetler ... "
                     "sınırlanabilir. 8")
        -> "Temel hak ve hürriyetler ... sınırlanabilir."
    """
    text = FOOTNOTE.sub("", ELISION.sub(" ", AMENDMENT_NOTE.sub("", clean_text(text))))
    return clean_text(FOOTNOTE_NUMBER.sub("", text))


def article_passages(records: list[dict], size: int = WINDOW_WORDS,
                     stride: int = WINDOW_STRIDE) -> list[Passage]:
    """One passage per article (more for a long one), in article order.

    records: {"madde": int, "baslik": str, "metin": str, "mulga": bool} each, as data/anayasa.json
    holds them. A repealed article's text is only its repeal note ("(Mülga: 21/1/2017-6771/16 md.)
    ..."), and its heading in the source is that of the section it stood in, so its passage says
    "(mülga)" instead of a heading and keeps the note; the others are read as reading_text gives
    them."""
    passages = []
    for record in records:
        number = record["madde"]
        if record["mulga"]:
            heading = "mülga"
            text = clean_text(record["metin"])
            prefix = f"Anayasa madde {number} (mülga)"
        else:
            heading = clean_text(record["baslik"])
            text = reading_text(record["metin"])
            prefix = f"Anayasa madde {number}, {heading}"
        parts = windows(text.split(), size, stride)
        for j, part in enumerate(parts):
            window = " ".join(part)
            if len(parts) == 1:
                passage_id = f"md{number}"
            else:
                passage_id = f"md{number}.{j + 1}"
            passages.append(Passage(id=passage_id, text=f"{prefix}: {window}",
                                    key=f"{heading} {window}", heading=heading, article=number))
    return passages


# --------------------------------------------------------------------------------------------------
# Passages from the training pairs
# --------------------------------------------------------------------------------------------------

def same_text(text: str) -> str:
    """The form in which two texts count as "the same passage": cleaned, Turkish-lowercased."""
    return turkish_lower(text)


def pair_passages(pairs: list[tuple[str, str]], withheld: set[str] = frozenset()) -> list[Passage]:
    """One passage per training pair: its answer, found by its question. ``pair`` is the pair's
    index in ``pairs`` (the training split), so a pair can be kept from retrieving itself.

    withheld: texts (in ``same_text`` form) that must not be in the corpus -- the validation
    answers. A training answer equal to one of them is left out: otherwise a validation question
    could be answered by copying its own reference, found under another training question (the data
    set repeats answers)."""
    return [Passage(id=f"pair{i}", text=answer, key=question, heading=question, pair=i)
            for i, (question, answer) in enumerate(pairs) if same_text(answer) not in withheld]


# --------------------------------------------------------------------------------------------------
# Article numbers written in the question
# --------------------------------------------------------------------------------------------------

# The ways the data writes an article number, after turkish_lower: "25. maddesi", "25 inci madde",
# "madde 101", "md. 2". subtle: "geçici madde 20" is a provisional article, which the corpus does
# not hold: not a reference.
ORDINAL = r"(?:\s*'?\s*(?:inci|ıncı|uncu|üncü|nci|ncı|ncu|ncü))?"
REFERENCE_PATTERNS = (re.compile(r"(?<!\d)(\d{1,3})\s*\.?" + ORDINAL + r"\s*madde"),
                      re.compile(r"(?<!geçici )\bmadde\s*(\d{1,3})(?!\d)"),
                      re.compile(r"\bmd\s*\.?\s*(\d{1,3})(?!\d)"))


def article_references(text: str) -> list[int]:
    """The article numbers ``text`` names, in the order they first appear, each once.

        article_references("Anayasa madde 101, ... ne tür hukuki mekanizmalar devreye girer")
            ->  [101]
        article_references("Anayasanın 25. Maddesi ile 26. maddesi")
            ->  [25, 26]
    """
    lowered = turkish_lower(text)
    found = []
    for pattern in REFERENCE_PATTERNS:
        for match in pattern.finditer(lowered):
            found.append((match.start(), int(match.group(1))))
    numbers = []
    for _, number in sorted(found):
        if number not in numbers:
            numbers.append(number)
    return numbers


def training_corpus(article_records: list[dict], train_pairs: list[tuple[str, str]],
                    val_pairs: list[tuple[str, str]] = (), with_pairs: bool = True,
                    size: int = WINDOW_WORDS, stride: int = WINDOW_STRIDE) -> list[Passage]:
    """The corpus a run retrieves from: the articles, then (``with_pairs``) the training answers,
    minus any training answer equal to a validation answer: no validation answer is ever in the
    corpus."""
    passages = article_passages(article_records, size, stride)
    if with_pairs:
        passages += pair_passages(train_pairs, withheld={same_text(a) for _, a in val_pairs})
    return passages
