"""From question/answer files to clean pairs: load, clean, split, and the one way a question becomes encoder input.

    pairs = load_pairs("data/sample.json")                # [(question, answer), ...]
    pairs, report = clean_pairs(pairs)                     # every cleaning step counted
    splits = split_pairs(pairs, val_fraction=0.05, test_fraction=0.05)   # by a hash of the question
    tok = BPETokenizer.train(q + " " + a for q, a in splits["train"])  # training split only
    src_ids, cut = encode_source(tok, "Kira sözleşmesi nedir?", max_src_len=128)

minillm.batching turns the pairs into padded batches. The real data set is one command away:
`python -m minillm.machinery.download --out data/full`.
"""
import csv
import hashlib
import json
import os
import unicodedata
from dataclasses import asdict, dataclass

# Column names tried in order when none are given: the Turkish data set's, then the English ones.
DEFAULT_KEYS = (("Soru", "Cevap"), ("question", "answer"))
# Default truncation lengths in tokens, including the eos/bos token. From bench/data.py on the real test split
# with an 8k tokenizer: questions p99 35 / max 86 tokens, answers p99 122 / max 445; these limits keep every
# question and all but 2 of 1,500 answers whole (see the README's data section).
MAX_SRC_LEN = 128
MAX_TGT_LEN = 256


class DataFormatError(ValueError):
    """A data file that cannot be read as question/answer pairs; the message names file, place and expectation."""


# ----------------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------------

def _pick_keys(path, where, record, question_key, answer_key):
    """The (question, answer) column names to use for this file, checked against its first record."""
    if question_key is not None or answer_key is not None:
        candidates = [(question_key or "Soru", answer_key or "Cevap")]
    else:
        candidates = list(DEFAULT_KEYS)
    for q, a in candidates:
        if q in record and a in record:
            return q, a
    wanted = " or ".join(f"{q!r}/{a!r}" for q, a in candidates)
    raise DataFormatError(f"{path}: {where} has keys {sorted(record)}; expected columns {wanted}")


def _pair_from(path, where, record, keys):
    if not isinstance(record, dict):
        raise DataFormatError(f"{path}: {where} is a {type(record).__name__}; expected an object with "
                              f"{keys[0]!r} and {keys[1]!r}")
    out = []
    for k in keys:
        if k not in record:
            raise DataFormatError(f"{path}: {where} lacks {k!r}; expected both {keys[0]!r} and {keys[1]!r}")
        v = record[k]
        if v is None:
            v = ""                    # an empty cell: kept here, dropped (and counted) by clean_pairs
        if not isinstance(v, str):
            raise DataFormatError(f"{path}: {where} field {k!r} is a {type(v).__name__}; expected a string")
        out.append(v)
    return out[0], out[1]


def load_pairs(path, question_key: str | None = None, answer_key: str | None = None,
               fmt: str | None = None) -> list[tuple[str, str]]:
    """Read (question, answer) pairs from a JSON list, a JSONL file or a CSV file with a header row.

    The format comes from the extension (.json, .jsonl, .csv) unless `fmt` says otherwise. Columns default to
    Soru/Cevap, else question/answer; pass question_key/answer_key for others. Raises FileNotFoundError for a
    missing file and DataFormatError naming the file, the record or line, and what was expected.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such data file (expected a .json, .jsonl or .csv file of "
                                f"question/answer pairs)")
    fmt = fmt or os.path.splitext(path)[1].lower().lstrip(".")
    if fmt not in ("json", "jsonl", "csv"):
        raise DataFormatError(f"{path}: unknown format {fmt!r}; expected .json (a list), .jsonl or .csv")
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:   # -sig: tolerate a byte-order mark
            text = f.read()
    except UnicodeDecodeError as e:
        raise DataFormatError(f"{path}: not UTF-8 text (byte {e.start}); expected a UTF-8 file") from None

    pairs, keys = [], None
    if fmt == "json":
        try:
            records = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataFormatError(f"{path}: invalid JSON at line {e.lineno}, column {e.colno} ({e.msg}); "
                                  f"expected a JSON list of objects (use .jsonl for one object per line)") from None
        if not isinstance(records, list):
            raise DataFormatError(f"{path}: top level is a {type(records).__name__}; expected a JSON list")
        for i, rec in enumerate(records):
            where = f"record {i}"
            if keys is None and isinstance(rec, dict):
                keys = _pick_keys(path, where, rec, question_key, answer_key)
            pairs.append(_pair_from(path, where, rec, keys or (question_key or "Soru", answer_key or "Cevap")))
    elif fmt == "jsonl":
        for line_no, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            where = f"line {line_no}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataFormatError(f"{path}: {where}, column {e.colno}: invalid JSON ({e.msg}); expected "
                                      f"one JSON object per line") from None
            if keys is None and isinstance(rec, dict):
                keys = _pick_keys(path, where, rec, question_key, answer_key)
            pairs.append(_pair_from(path, where, rec, keys or (question_key or "Soru", answer_key or "Cevap")))
    else:
        reader = csv.reader(text.splitlines())
        try:
            header = next(reader)
        except StopIteration:
            raise DataFormatError(f"{path}: empty file; expected a CSV header row") from None
        keys = _pick_keys(path, "the header row", dict.fromkeys(header), question_key, answer_key)
        qi, ai = header.index(keys[0]), header.index(keys[1])
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise DataFormatError(f"{path}: line {reader.line_num} has {len(row)} fields; expected "
                                      f"{len(header)} as in the header")
            pairs.append((row[qi], row[ai]))
    return pairs


# ----------------------------------------------------------------------------------------------------------
# Cleaning
# ----------------------------------------------------------------------------------------------------------

@dataclass
class CleaningReport:
    """How many strings or pairs each cleaning step touched (strings: questions and answers counted apart)."""
    pairs_in: int = 0
    nfc_changed: int = 0          # strings changed by Unicode NFC
    dotted_i_fixed: int = 0       # strings in which "i" + U+0307 became "i"
    whitespace_changed: int = 0   # strings whose whitespace was collapsed or stripped
    empty_dropped: int = 0        # pairs dropped because the question or the answer was empty
    duplicates_dropped: int = 0   # pairs dropped because the same (question, answer) came earlier
    pairs_out: int = 0

    def __str__(self):
        return ", ".join(f"{k}={v}" for k, v in asdict(self).items())


COMBINING_DOT_ABOVE = "\u0307"


def fix_dotted_i(text: str) -> str:
    """Map "i" + U+0307 COMBINING DOT ABOVE to "i".

    subtle: Python's (locale-free) "İ".lower() is "i̇" = "i" + U+0307, because Unicode's default lowercasing
    keeps the dot as a separate mark. NFC cannot compose it back (there is no precomposed "i with a dot
    above": "i" already has one), so it survives normalisation, looks like "i" on screen, and splits words
    such as "i̇şletme" from "işletme" in the tokenizer. Turkish lowercase of "İ" is plain "i".
    A capital "I" + U+0307 is left alone: NFC turns it into "İ" (U+0130), which is correct Turkish.
    """
    return text.replace("i" + COMBINING_DOT_ABOVE, "i")


def normalize_whitespace(text: str) -> str:
    """Collapse every run of Unicode whitespace (spaces, tabs, newlines, no-break spaces) to one space."""
    return " ".join(text.split())


def clean_text(text: str) -> str:
    """The per-string cleaning of clean_pairs, without the counting: NFC, the dotted-i fix, whitespace."""
    return normalize_whitespace(fix_dotted_i(unicodedata.normalize("NFC", text)))


def clean_pairs(pairs) -> tuple[list[tuple[str, str]], CleaningReport]:
    """Clean every string, drop empty and exactly duplicated pairs; count what each step did.

    Order matters: NFC first (so that decomposed letters compare equal), then the dotted-i fix, then
    whitespace; emptiness and duplicates are judged on the cleaned text. The first of duplicates is kept.
    """
    report = CleaningReport(pairs_in=len(pairs))
    seen, out = set(), []
    for q, a in pairs:
        cleaned = []
        for s in (q, a):
            t = unicodedata.normalize("NFC", s)
            report.nfc_changed += t != s
            u = fix_dotted_i(t)
            report.dotted_i_fixed += u != t
            w = normalize_whitespace(u)
            report.whitespace_changed += w != u
            cleaned.append(w)
        pair = (cleaned[0], cleaned[1])
        if not pair[0] or not pair[1]:
            report.empty_dropped += 1
            continue
        if pair in seen:
            report.duplicates_dropped += 1
            continue
        seen.add(pair)
        out.append(pair)
    report.pairs_out = len(out)
    return out, report


# ----------------------------------------------------------------------------------------------------------
# Splitting
# ----------------------------------------------------------------------------------------------------------

def split_key(question: str) -> str:
    """The text that decides a pair's split: the cleaned question, lowercased the Turkish-safe way."""
    # fix_dotted_i again after lower(): lower() of "İ" creates the very "i" + U+0307 sequence we remove.
    return fix_dotted_i(clean_text(question).lower())


def split_fraction(question: str, salt: str = "minillm-split-1") -> float:
    """A number in [0, 1) fixed by the question alone: the first 8 bytes of SHA-256, read as an integer.

    subtle: Python's hash() of a str is salted per process (PYTHONHASHSEED), so it would move questions
    between splits from one run to the next; hashlib is the same everywhere, forever.
    """
    digest = hashlib.sha256((salt + "\x00" + split_key(question)).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_pairs(pairs, val_fraction: float = 0.05, test_fraction: float = 0.05,
                salt: str = "minillm-split-1") -> dict[str, list[tuple[str, str]]]:
    """Deterministic train/val/test split by a hash of the question; keeps the input order inside each split.

    Every pair with the same (normalised) question lands in the same split, whatever the file order, so the
    same question never appears in training and in evaluation. Sizes are close to, not exactly, the fractions.
    """
    if not (0.0 <= val_fraction < 1.0 and 0.0 <= test_fraction < 1.0 and val_fraction + test_fraction < 1.0):
        raise ValueError(f"split fractions must be >= 0 and sum to < 1; got val={val_fraction}, "
                         f"test={test_fraction}")
    splits = {"train": [], "val": [], "test": []}
    for q, a in pairs:
        u = split_fraction(q, salt)
        name = "test" if u < test_fraction else "val" if u < test_fraction + val_fraction else "train"
        splits[name].append((q, a))
    return splits


# ----------------------------------------------------------------------------------------------------------
# The encoder input: one definition for training and for answering
# ----------------------------------------------------------------------------------------------------------

def encode_source(tokenizer, question: str, max_src_len: int) -> tuple[list[int], bool]:
    """(src_ids, cut): the question cleaned by clean_text, tokenised, cut to max_src_len - 1 ids, then <eos>.

    Training (minillm.batching.Seq2SeqDataset) and answering (minillm.generation) both call this, so the
    model is asked in exactly the form it learned from. `cut` says whether tokens were dropped.
    subtle: without the cleaning at answer time, a question typed on a system that sends decomposed (NFD)
    letters, or lowercased with Python's "İ".lower(), becomes ids the model never saw (an NFD question: 23
    tokens instead of 14); without the same max_src_len, a long question reaches positions it never trained on.
    """
    if max_src_len < 2:
        raise ValueError(f"max_src_len must be >= 2 (a token plus <eos>), got {max_src_len}")
    ids = tokenizer.encode(clean_text(question))
    cut = len(ids) > max_src_len - 1
    return ids[:max_src_len - 1] + [tokenizer.eos_id], cut
