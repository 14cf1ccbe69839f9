"""Reading question/answer pairs from files: a JSON list, JSON Lines or CSV with a header row.

    pairs = load_pairs("data/sample.json")                 # [(question, answer), ...]

Every way a file can be wrong is a DataFormatError naming the file, the record or line, and what was
expected. What happens to the pairs next (cleaning, the split, tokens) is minillm.data.
"""
import csv
import json
import os
import stat

# Column names tried in order when none are given: the Turkish data set's, then the English ones.
DEFAULT_KEYS = (("Soru", "Cevap"), ("question", "answer"))

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


def parse_json(text: str, place: str, expected: str):
    """json.loads; every way it can fail becomes a DataFormatError. `place` may use {line} and {column}
    (the corpus file reader, minillm.machinery.corpusfile, uses it too)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        problem = f"{place.format(line=e.lineno, column=e.colno)} ({e.msg})"
    except (ValueError, RecursionError) as e:   # a 5,000-digit number; lists nested 100,000 deep
        problem = f"{place.format(line='?', column='?')} ({type(e).__name__}: {str(e)[:80]})"
    raise DataFormatError(f"{problem}; expected {expected}")


def load_pairs(path, question_key: str | None = None, answer_key: str | None = None,
               fmt: str | None = None) -> list[tuple[str, str]]:
    """Read (question, answer) pairs from a JSON list, a JSONL file or a CSV file with a header row.

    The format comes from the extension (.json, .jsonl, .csv) unless `fmt` says otherwise. Columns default to
    Soru/Cevap, else question/answer; pass question_key/answer_key for others. Raises FileNotFoundError for a
    missing file and DataFormatError naming the file, the record or line, and what was expected.
    """
    path = os.fspath(path)
    expected = "expected a .json, .jsonl or .csv file of question/answer pairs"
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such data file ({expected})")
    if not os.path.isfile(path):   # subtle: reading a FIFO would wait for a writer forever
        raise DataFormatError(f"{path}: {_kind_of(path)}, not a regular file; {expected}")
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
        records = parse_json(text, f"{path}: invalid JSON at line {{line}}, column {{column}}",
                        "a JSON list of objects (use .jsonl for one object per line)")
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
            rec = parse_json(line, f"{path}: {where}, column {{column}}: invalid JSON", "one JSON object per line")
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
        try:
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue
                if len(row) != len(header):
                    raise DataFormatError(f"{path}: line {reader.line_num} has {len(row)} fields; expected "
                                          f"{len(header)} as in the header")
                pairs.append((row[qi], row[ai]))
        except csv.Error as e:   # e.g. a field over csv.field_size_limit() (131,072 characters)
            raise DataFormatError(f"{path}: line {reader.line_num}: {e}; expected CSV with a header row "
                                  f"(a text that long belongs in a .json or .jsonl file)") from None
    return pairs


def _kind_of(path) -> str:
    """What a path that is not a regular file is, in words: "a directory", "a named pipe (FIFO)", ..."""
    mode = os.stat(path).st_mode
    kinds = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
    return next((name for test, name in kinds if test(mode)), "a special file")
