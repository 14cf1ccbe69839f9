"""From raw question/answer pairs to clean ones: clean, split, and the one way a question becomes
encoder input.

    pairs, report = clean_pairs(pairs)  # [(question, answer), ...], every cleaning step counted
    splits = split_pairs(pairs, val_fraction=0.05, test_fraction=0.05)  # by a hash of the question
    tok = BPETokenizer.train(q + " " + a for q, a in splits["train"])  # training split only
    src_ids, cut = encode_source(tok, "Kira sözleşmesi nedir?", max_src_len=128)

Reading pairs from JSON, JSONL or CSV files is machinery (minillm.machinery.datafiles.load_pairs);
minillm.batching turns the pairs into padded batches.
"""
import hashlib
import unicodedata
from dataclasses import asdict, dataclass

# Default truncation lengths in tokens, including the eos/bos token. From bench/data.py on the real
# test split with an 8k tokenizer: questions p99 35 / max 86 tokens, answers p99 122 / max 445;
# these limits keep every question and all but 2 of 1,500 answers whole (bench/README.md,
# bench/data.py).
MAX_SRC_LEN = 128
MAX_TGT_LEN = 256


# --------------------------------------------------------------------------------------------------
# Cleaning
# --------------------------------------------------------------------------------------------------

@dataclass
class CleaningReport:
    """How many strings or pairs each cleaning step touched.

    Strings: questions and answers are counted apart."""
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

    subtle: Python's (locale-free) "İ".lower() is "i̇" = "i" + U+0307, because Unicode's default
    lowercasing keeps the dot as a separate mark. NFC cannot compose it back (there is no
    precomposed "i with a dot above": "i" already has one), so it survives normalisation, looks like
    "i" on screen, and splits words such as "i̇şletme" from "işletme" in the tokenizer. Turkish
    lowercase of "İ" is plain "i". A capital "I" + U+0307 is left alone: NFC turns it into "İ"
    (U+0130), which is correct Turkish.
    """
    return text.replace("i" + COMBINING_DOT_ABOVE, "i")


def normalize_whitespace(text: str) -> str:
    """Collapse every run of Unicode whitespace (spaces, tabs, newlines, no-break spaces) to one
    space."""
    return " ".join(text.split())


def clean_text(text: str) -> str:
    """clean_pairs' per-string cleaning, without the counting: NFC, the dotted-i fix, whitespace."""
    return normalize_whitespace(fix_dotted_i(unicodedata.normalize("NFC", text)))


def printable(text: str) -> str:
    """`text` with any lone surrogate written as a \\udxxx escape, so print() cannot fail on it.

    subtle: JSON may hold "\\ud800" alone (half of a UTF-16 pair); Python reads it into a str that
    every step here handles, but writing it to a UTF-8 terminal raises UnicodeEncodeError."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def clean_pairs(pairs) -> tuple[list[tuple[str, str]], CleaningReport]:
    """Clean every string, drop empty and exactly duplicated pairs; count what each step did.

    Order matters: NFC first (so that decomposed letters compare equal), then the dotted-i fix, then
    whitespace; emptiness and duplicates are judged on the cleaned text. The first of duplicates is
    kept.
    """
    report = CleaningReport(pairs_in=len(pairs))
    seen = set()
    out = []
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


# --------------------------------------------------------------------------------------------------
# Splitting
# --------------------------------------------------------------------------------------------------

def turkish_lower(text: str) -> str:
    """clean_text, then lowercase the Turkish way: "I" -> "ı", "İ" -> "i".

    Example: "GREV HAKKI" -> "grev hakkı"."""
    # subtle: str.lower() is not Turkish. It maps "I" to "i" (Turkish: "ı"), so "HAKKI" would not
    # meet "hakkı"; and "İ" to "i" + U+0307, the very sequence fix_dotted_i removes, so it runs
    # again after lower().
    return fix_dotted_i(clean_text(text).replace("I", "ı").lower())


def split_key(question: str) -> str:
    """The text that decides a pair's split: the cleaned question, lowercased the Turkish way."""
    return turkish_lower(question)


def split_fraction(question: str, salt: str = "minillm-split-1") -> float:
    """A number in [0, 1) fixed by the question alone: SHA-256's first 8 bytes, read as an integer.

    subtle: Python's hash() of a str is salted per process (PYTHONHASHSEED), so it would move
    questions between splits from one run to the next; hashlib is the same everywhere, forever.
    """
    # surrogatepass: a lone surrogate (possible in a Python str read from broken JSON) still hashes
    digest = hashlib.sha256(
        (salt + "\x00" + split_key(question)).encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_pairs(pairs, val_fraction: float = 0.05, test_fraction: float = 0.05,
                salt: str = "minillm-split-1") -> dict[str, list[tuple[str, str]]]:
    """Deterministic train/val/test split by a hash of the question; keeps the input order inside
    each split.

    Every pair with the same (normalised) question lands in the same split, whatever the file order,
    so the same question never appears in training and in evaluation. Sizes are close to, not
    exactly, the fractions.
    """
    if not (0.0 <= val_fraction < 1.0 and 0.0 <= test_fraction < 1.0
            and val_fraction + test_fraction < 1.0):
        raise ValueError(f"split fractions must be >= 0 and sum to < 1; got val={val_fraction}, "
                         f"test={test_fraction}")
    splits = {"train": [], "val": [], "test": []}
    for q, a in pairs:
        u = split_fraction(q, salt)
        if u < test_fraction:
            name = "test"
        elif u < test_fraction + val_fraction:
            name = "val"
        else:
            name = "train"
        splits[name].append((q, a))
    return splits


# --------------------------------------------------------------------------------------------------
# The encoder input: one definition for training and for answering
# --------------------------------------------------------------------------------------------------

def encode_source(tokenizer, question: str, max_src_len: int) -> tuple[list[int], bool]:
    """(src_ids, cut): the question cleaned by clean_text, tokenised, cut to max_src_len - 1 ids,
    then <eos>.

    Training (minillm.batching.Seq2SeqDataset) and answering (minillm.generation) both call this, so
    the model is asked in exactly the form it learned from. `cut` says whether tokens were dropped.
    subtle: without the cleaning at answer time, a question typed on a system that sends decomposed
    (NFD) letters, or lowercased with Python's "İ".lower(), becomes ids the model never saw (an NFD
    question: 23 tokens instead of 14); without the same max_src_len, a long question reaches
    positions it never trained on.
    """
    if max_src_len < 2:
        raise ValueError(f"max_src_len must be >= 2 (a token plus <eos>), got {max_src_len}")
    ids = tokenizer.encode(clean_text(question))
    cut = len(ids) > max_src_len - 1
    return ids[:max_src_len - 1] + [tokenizer.eos_id], cut
