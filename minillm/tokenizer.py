"""Byte-level byte-pair encoding (BPE), trained from scratch.

BPE (Sennrich et al. 2016, "Neural Machine Translation of Rare Words with Subword Units") starts
from a base alphabet and repeatedly merges the most frequent adjacent pair of symbols into a new
symbol. Byte-level BPE (Radford et al. 2019, GPT-2) uses the 256 byte values as the base alphabet,
so every string can be encoded and nothing is ever "unknown" -- which matters for Turkish, where a
tokenizer built for English (t5-small's, say) silently drops or mangles "ı", "ğ" and "ş".

Vocabulary layout (ids):
    0, 1, 2      special tokens <pad>, <bos>, <eos> (pad is 0: zero-filled tensors are padding)
    3 .. 258     the 256 byte values (token id = byte + 3)
    259 ..       one id per learned merge, in the order the merges were learned

Learning the merges and replaying them on token ids is minillm/bpe.py (each as a textbook loop,
and a fast version that equals it). This module is everything around it:

1. Pre-tokenisation. Text is first split into chunks (words with their leading space, numbers of
   at most three digits, punctuation runs, whitespace) by one regular expression, ``PATTERN``.
   Merges never cross a chunk boundary, and *the same pattern* is used for training and for
   encoding. Training counts each distinct chunk once, with its frequency (``count_chunks``), and
   hands those counts to ``bpe.train_merges``.
2. Encoding replays the merges on each chunk, earliest-learned first (``bpe.merge_chunk_textbook``
   on short chunks, the equal ``bpe.merge_chunk`` on long ones), and caches the ids of every chunk
   it has seen.
3. Special tokens, decoding, and a versioned text file (``save`` / ``load``).

Lone surrogates (str values such as "\\ud800", which are not valid Unicode scalar values and
cannot be UTF-8 encoded) are encoded with Python's "surrogatepass" rule, i.e. as the three bytes
UTF-8 would use for that code point. So ``decode(encode(s)) == s`` holds for *every* Python str.
Decoding an arbitrary id sequence that does not form valid UTF-8 (a model can generate one) never
raises: such bytes become U+FFFD.

Normalisation (NFC, the Turkish "i̇" fix) is deliberately *not* done here: the tokenizer is
lossless, and cleaning belongs to the data pipeline (minillm/data.py).
"""
from __future__ import annotations

import codecs
import json
import os
import re
from collections import Counter
from typing import Iterable

from minillm.bpe import merge_chunk, merge_chunk_textbook, train_merges
from minillm.files import atomic_write_text

FORMAT_NAME = "minillm-bpe"
FORMAT_VERSION = 1

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>")  # ids 0, 1, 2
N_SPECIAL = len(SPECIAL_TOKENS)
BYTE_OFFSET = N_SPECIAL  # byte value b has token id b + BYTE_OFFSET
FIRST_MERGE_ID = BYTE_OFFSET + 256

# Combining marks (Unicode category Mn in the common blocks). Python's `re` has no \p{M}, and \w
# does not match marks, so we list the blocks. Keeping marks inside words matters for Turkish:
# lowercasing "İ" gives "i" + U+0307.
_MARKS = ("\u0300-\u036f\u0483-\u0489\u0591-\u05bd\u0610-\u061a\u064b-\u065f\u0900-\u0903"
          "\u093a-\u094f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe00-\ufe0f\ufe20-\ufe2f")
# a letter of any script (\w minus digits and "_"), or a combining mark
_LETTER = rf"(?:[^\W\d_]|[{_MARKS}])"

# The pre-tokenisation pattern, tried left to right at each position:
#   a word with at most one leading space          " Anayasa", "ılık", "i̇lk"
#   an apostrophe suffix, Turkish style            "'nin" in "Türkiye'nin"
#   a number, in groups of at most three digits    "1982" -> "198", "2"
#   a run of punctuation/symbols with optional space and the line breaks after it
#   line breaks (with the spaces before them), trailing spaces, other whitespace
# Every character matches one branch (a letter, a digit, whitespace, or "anything else"), so
# joining the chunks gives back the text exactly; tests/test_tokenizer.py checks that with
# hypothesis.
PATTERN = (
    rf" ?{_LETTER}+"
    rf"|'{_LETTER}+"
    r"| ?\d{1,3}"
    rf"| ?(?:[^\w\s{_MARKS}]|_)+[\r\n]*"
    r"|\s*[\r\n]+"
    r"|\s+(?!\S)"
    r"|\s+"
)


def _surrogate_or_replace(err: UnicodeDecodeError):
    """Decoding error handler: UTF-8-style encoded surrogates come back as the surrogate
    ("surrogatepass"), any other invalid byte sequence becomes U+FFFD (as errors="replace"
    would)."""
    bad = err.object[err.start:err.start + 3]
    if len(bad) == 3 and bad[0] == 0xED and 0xA0 <= bad[1] <= 0xBF and 0x80 <= bad[2] <= 0xBF:
        code_point = ((bad[0] & 0x0F) << 12) | ((bad[1] & 0x3F) << 6) | (bad[2] & 0x3F)
        return chr(code_point), err.start + 3
    return "\ufffd", err.end


codecs.register_error("minillm-bpe", _surrogate_or_replace)


def _text_to_bytes(text: str) -> bytes:
    return text.encode("utf-8", errors="surrogatepass")


def count_chunks(texts: Iterable[str]) -> dict[tuple[int, ...], int]:
    """The distinct pre-tokenised chunks of `texts` (tuples of byte token ids), with their counts.

    These are the "words" that minillm/bpe.py learns merges from. Counting each distinct chunk once
    is what lets training scale with the vocabulary of the corpus rather than its length.
    """
    if isinstance(texts, str):
        raise TypeError("texts must be an iterable of str, not a single str (wrap it in a list)")
    split = re.compile(PATTERN).findall
    chunk_counts: Counter[str] = Counter()
    for text in texts:
        if not isinstance(text, str):
            raise TypeError(f"texts must contain str, got {type(text).__name__}")
        chunk_counts.update(split(text))
    # subtle: distinct chunks give distinct byte strings (surrogatepass is one-to-one), so no
    # counts are lost here
    return {tuple(b + BYTE_OFFSET for b in _text_to_bytes(chunk)): n
            for chunk, n in chunk_counts.items()}


def _file_error(path: str, line_no: int, problem: str) -> ValueError:
    """The one shape of a complaint about a tokenizer file: it names the file and the line."""
    return ValueError(f"tokenizer file {path!r}, line {line_no}: {problem}")


def _parse_merge(line: str, line_no: int, new_id: int, path: str) -> tuple[int, int]:
    """One "left right  # comment" line: a merge may only use bytes and earlier merges."""
    fields = line.split("#", 1)[0].split()
    if len(fields) != 2 or not all(f.isascii() and f.isdigit() for f in fields):
        raise _file_error(path, line_no,
                          f"expected two token ids 'left right', found {line[:60]!r}")
    left = int(fields[0])
    right = int(fields[1])
    if not (BYTE_OFFSET <= left < new_id and BYTE_OFFSET <= right < new_id):
        raise _file_error(path, line_no, f"merge ({left}, {right}) must use byte or earlier merge "
                                         f"ids in [{BYTE_OFFSET}, {new_id})")
    return left, right


class BPETokenizer:
    """A trained byte-level BPE tokenizer: a list of merges plus the pre-tokenisation pattern."""

    pad_id = 0
    bos_id = 1
    eos_id = 2

    def __init__(self, merges: list[tuple[int, int]], pattern: str = PATTERN,
                 textbook: bool = False):
        self.merges = [tuple(m) for m in merges]
        self.textbook = textbook  # True: long chunks too use merge_chunk_textbook (tests, bench)
        self.pattern = pattern
        self._split = re.compile(pattern).findall
        # a pair's merge rank = the id of the token it makes: learned earlier, applied earlier
        self._merge_ranks = {pair: FIRST_MERGE_ID + i for i, pair in enumerate(self.merges)}
        # bytes of every token id, built up merge by merge (specials have no bytes: not text)
        self._bytes = [b""] * N_SPECIAL + [bytes([b]) for b in range(256)]
        for left, right in self.merges:
            self._bytes.append(self._bytes[left] + self._bytes[right])
        self._cache: dict[str, tuple[int, ...]] = {}
        self._special_re = re.compile("|".join(re.escape(s) for s in SPECIAL_TOKENS))

    @property
    def vocab_size(self) -> int:
        return FIRST_MERGE_ID + len(self.merges)

    # ------------------------------------------------------------------------------- training
    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 8000,
              min_frequency: int = 2) -> "BPETokenizer":
        """Learn `vocab_size - 259` merges (fewer if no pair occurs `min_frequency` times).

        A pair seen fewer than `min_frequency` times is not merged: with the default 2, a merge
        must at least be a pattern, not a single occurrence. Ties between equally frequent pairs go
        to the smallest (left, right) ids, so the result is deterministic (see minillm/bpe.py).
        """
        if not isinstance(vocab_size, int) or vocab_size < FIRST_MERGE_ID:
            raise ValueError(f"vocab_size must be an int >= {FIRST_MERGE_ID} "
                             f"(3 special tokens + 256 bytes), got {vocab_size!r}")
        merges = train_merges(count_chunks(texts), n_merges=vocab_size - FIRST_MERGE_ID,
                              first_id=FIRST_MERGE_ID, min_frequency=min_frequency)
        return cls(merges)

    # ------------------------------------------------------------------------------- encoding
    def _encode_ordinary(self, text: str) -> list[int]:
        cache = self._cache
        if len(cache) > 500_000:  # bound memory on endless streams of new chunks
            cache.clear()
        out: list[int] = []
        for chunk in self._split(text):
            ids = cache.get(chunk)
            if ids is None:
                byte_ids = [b + BYTE_OFFSET for b in _text_to_bytes(chunk)]
                # under ~64 bytes the textbook loop is faster (less set-up); above, O(n log n) wins
                merge = merge_chunk_textbook if self.textbook or len(byte_ids) < 64 else merge_chunk
                ids = cache[chunk] = tuple(merge(byte_ids, self._merge_ranks))
            out.extend(ids)
        return out

    def encode(self, text: str, allow_special: bool = False) -> list[int]:
        """Token ids of `text`, with no special tokens added.

        The literal string "<eos>" in `text` is ordinary text (encoded as its bytes) unless
        `allow_special` is True, in which case "<pad>", "<bos>" and "<eos>" become their ids.
        """
        if not isinstance(text, str):
            raise TypeError(f"encode expects a str, got {type(text).__name__}")
        if not allow_special:
            return self._encode_ordinary(text)
        out, start = [], 0
        for m in self._special_re.finditer(text):
            out.extend(self._encode_ordinary(text[start:m.start()]))
            out.append(SPECIAL_TOKENS.index(m.group()))
            start = m.end()
        out.extend(self._encode_ordinary(text[start:]))
        return out

    def encode_batch(self, texts: list[str], allow_special: bool = False) -> list[list[int]]:
        return [self.encode(t, allow_special) for t in texts]

    # ------------------------------------------------------------------------------- decoding
    def decode(self, ids: Iterable[int], skip_special: bool = True) -> str:
        """Text of `ids`; special tokens are dropped (spelled out, "<eos>", if not skip_special)."""
        table = self._bytes
        parts = []
        for i in ids:
            i = int(i)
            if not 0 <= i < len(table):
                raise ValueError(f"token id {i} is outside the vocabulary [0, {len(table)})")
            if i >= N_SPECIAL:
                parts.append(table[i])
            elif not skip_special:  # specials are not text: dropped, or spelled out as "<eos>"
                parts.append(SPECIAL_TOKENS[i].encode())
        return b"".join(parts).decode("utf-8", errors="minillm-bpe")

    def id_to_token_str(self, i: int) -> str:
        """A printable form of one token, for displays such as heatmaps ("ı", " Anay", "\\xc4")."""
        if 0 <= i < N_SPECIAL:
            return SPECIAL_TOKENS[i]
        return self._bytes[i].decode("utf-8", errors="backslashreplace")

    # ------------------------------------------------------------------------------- files
    def save(self, path: str | os.PathLike) -> None:
        """Write `to_text()` to a file atomically (minillm/files.py: a temporary file, renamed)."""
        atomic_write_text(path, self.to_text())

    def to_text(self) -> str:
        """The file: "minillm-bpe 1", the pattern as a JSON string, the merge count, one merge per
        line ("left right" ids, with the new token's text as a comment), and "end" so a truncated
        file is detected."""
        lines = [f"{FORMAT_NAME} {FORMAT_VERSION}", "pattern " + json.dumps(self.pattern),
                 f"merges {len(self.merges)}"]
        for i, (left, right) in enumerate(self.merges):
            text = json.dumps(self.id_to_token_str(FIRST_MERGE_ID + i))
            lines.append(f"{left} {right}  # {FIRST_MERGE_ID + i} = {text}")
        lines.append("end")
        return "\n".join(lines) + "\n"

    @classmethod
    def load(cls, path: str | os.PathLike) -> "BPETokenizer":
        """Read a file written by `save`; anything else raises a ValueError naming the file and the
        problem."""
        path = os.fspath(path)
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except FileNotFoundError:
            raise FileNotFoundError(f"tokenizer file {path!r} does not exist") from None
        except UnicodeDecodeError as e:
            raise ValueError(f"tokenizer file {path!r} is not UTF-8 text ({e})") from None
        return cls.from_text(text, path)

    @classmethod
    def from_text(cls, text: str, path: str = "<text>") -> "BPETokenizer":
        """Parse the contents of a tokenizer file (`path` only names it in error messages)."""
        lines = text.split("\n")
        # line 1: the format and its version
        header = f"{FORMAT_NAME} {FORMAT_VERSION}"
        if lines[0] != header:
            raise _file_error(path, 1, f"expected the header {header!r}, found {lines[0][:60]!r}")
        # line 2: the pre-tokenisation pattern, as a JSON string
        if len(lines) < 3 or not lines[1].startswith("pattern "):
            raise _file_error(path, 2, "expected 'pattern <JSON string>'")
        try:
            pattern = json.loads(lines[1][len("pattern "):])
        except json.JSONDecodeError as e:
            raise _file_error(path, 2, "the pattern is not a valid JSON-encoded regular "
                                       f"expression ({e})")
        if pattern != PATTERN:
            # subtle: the pattern is code in disguise: "" splits nothing and loses text, "(a+)+$"
            # backtracks for ever on a long "aaa…b". Only the pattern this code was written and
            # tested with is accepted.
            raise _file_error(path, 2, "the pattern is not minillm's pre-tokenisation pattern "
                                       "(tokenizer.PATTERN); the file was edited or written by "
                                       "another tokenizer")
        # line 3: how many merges follow
        count_match = re.fullmatch(r"merges (\d+)", lines[2])
        if count_match is None:
            raise _file_error(path, 3, f"expected 'merges <count>', found {lines[2][:60]!r}")
        n_merges = int(count_match.group(1))
        # lines 4 ..: one merge per line, in the order they were learned
        merges: dict[tuple[int, int], None] = {}  # keeps the order, finds a repeated merge at once
        for k in range(n_merges):
            line_no = 4 + k
            if line_no - 1 >= len(lines) or lines[line_no - 1] in ("", "end"):
                raise _file_error(path, line_no, f"file ends after {k} of {n_merges} merges "
                                                 "(truncated?)")
            pair = _parse_merge(lines[line_no - 1], line_no, FIRST_MERGE_ID + k, path)
            if pair in merges:
                raise _file_error(path, line_no, f"merge {pair} appears twice")
            merges[pair] = None
        # then "end", and nothing after it
        end_line = 4 + n_merges
        if end_line - 1 >= len(lines) or lines[end_line - 1] != "end":
            raise _file_error(path, end_line, "expected 'end' after the merges (truncated or extra "
                                              "lines?)")
        if any(line.strip() for line in lines[end_line:]):
            raise _file_error(path, end_line + 1, "unexpected content after 'end'")
        return cls(list(merges), pattern)
