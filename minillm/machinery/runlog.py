"""The run log, <run dir>/log.jsonl: one JSON object per line, the one definition of its format.

The trainer appends records; the web page reads them for its training curves; a resumed run cuts the records
past the step it resumed from. Every record has "kind" and "step":

    {"kind": "info",  "step": 0, "params": ..., "train_pairs": ..., "device": ..., "peak_flops": ...}
    {"kind": "train", "step": n, "loss": ..., "lr": ..., "grad_norm": ..., "tokens": ..., "tokens_per_s": ...}
    {"kind": "skip",  "step": n, "loss": NaN, "grad_norm": ..., "skipped": ..., "bad_in_a_row": ...}
    {"kind": "eval",  "step": n, "nll": ..., "perplexity": ..., "accuracy": ..., "cond_gain": ..., "chrf": ...}

subtle: a non-finite float is written as NaN / Infinity (Python's json does so by default); that is not JSON,
so the reader maps it to None, and a browser's JSON.parse never sees it.
"""
from __future__ import annotations

import json
from pathlib import Path

from minillm.files import atomic_write_text

LOG_FILE = "log.jsonl"
KINDS = ("info", "train", "skip", "eval")


def append(path, record: dict) -> None:
    """Add one record as one line. Append mode: a kill mid-write cuts at most this last line."""
    if record.get("kind") not in KINDS or not isinstance(record.get("step"), int):
        raise ValueError(f"a run-log record needs kind in {KINDS} and an int step, got {record!r:.200}")
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def _lines(path) -> list[tuple[str, dict | None, str]]:
    """(line, record or None, why not a record) for every non-blank line, in file order; why starts with
    the line's number in the file."""
    out = []
    for number, raw in enumerate(Path(path).read_bytes().split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            out.append((raw.decode("utf-8", "replace"), None, f"line {number}: not UTF-8"))
            continue
        try:
            record = json.loads(line, parse_constant=lambda name: None)
        except (ValueError, RecursionError):   # e.g. a line cut by a kill
            out.append((line, None, f"line {number}: not JSON (cut by a kill?)"))
            continue
        step = record.get("step") if isinstance(record, dict) else None
        if not isinstance(record, dict):
            out.append((line, None, f"line {number}: a JSON {type(record).__name__}, not an object"))
        elif isinstance(step, bool) or not isinstance(step, (int, float)):
            out.append((line, None, f"line {number}: no numeric \"step\" (got {step!r:.20})"))
        else:
            out.append((line, record, ""))
    return out


def read(path) -> tuple[list[dict], int]:
    """(records in file order, number of lines that were not records). A missing file is ([], 0)."""
    if not Path(path).is_file():
        return [], 0
    lines = _lines(path)
    records = [r for _, r, _ in lines if r is not None]
    return records, len(lines) - len(records)


def truncate_after(path, step: int) -> list[str]:
    """Drop every record past `step`, and every line that is not a record, rewriting the file atomically.

    A run killed after its last checkpoint logged steps that the resumed run will do again. Returns one
    description per line that was not a record ("line 7: not JSON (cut by a kill?)"), for a warning."""
    if not Path(path).is_file():
        return []
    lines = _lines(path)
    kept = [line for line, r, _ in lines if r is not None and r["step"] <= step]
    atomic_write_text(path, "".join(k + "\n" for k in kept))
    return [why for _, r, why in lines if r is None]
