"""The lesson's numbers, kept honest: stage blocks compared to a few significant digits, and every number the
prose quotes found in a block.

A chapter's stage blocks are printed from the lesson's model (`make lesson-model`); `make lesson-check` trains that
model again and compares each block with `first_difference`, number by number to 3 significant digits (another
machine rounds the last digits differently; a different run differs in the first ones). The prose around the
blocks quotes some of those numbers ("the weight on `Anayasa` is 0.6968"); `prose_problems` finds every number
in the prose with two or more decimals and requires it in a stage or code block of the same chapter, rounded as
the prose rounds it, or declared in a comment of the chapter as coming from elsewhere:

    <!-- numbers not from a stage: 0.05 (the preset's dropout), 44.3 (bench/README.md) -->

So a new model leaves no stale number in the text: the check names each one.
"""
from __future__ import annotations

import math
import re

NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e[+-]?\d+)?")
# A number as prose writes it: English 1,024.5 and Turkish 1.024,5, a minus sign of either kind.
PROSE_NUMBER = re.compile(r"(?<![\w§.,])[-−]?\d[\d.,]*\d(?![\w])")
DECLARED = re.compile(r"^<!-- numbers not from a stage: (.*) -->$")
CODE_SPAN = re.compile(r"`[^`]*`")
TURKISH_THOUSANDS = re.compile(r"-?[1-9]\d{0,2}(?:\.\d{3})+")


def numbers_agree(old: str, new: str, digits: int) -> bool:
    """The same text, and each number the same to `digits` significant digits: one unit in the last of
    them apart at most (0.6968 and 0.6971 agree to 3; 0.6968 and 0.5498 do not)."""
    old_numbers, new_numbers = NUMBER.findall(old), NUMBER.findall(new)
    if NUMBER.sub("#", old) != NUMBER.sub("#", new) or len(old_numbers) != len(new_numbers):
        return False
    for a, b in zip(map(float, old_numbers), map(float, new_numbers)):
        scale = max(abs(a), abs(b))
        if scale and abs(a - b) > 10 ** (math.floor(math.log10(scale)) - (digits - 1)) * (1 + 1e-9):
            return False
    return True


def first_difference(old_blocks, new_blocks, where: str, digits: int | None) -> str | None:
    """None when the refreshed blocks match the old ones: exactly, or, with `digits`, exactly outside the
    stage blocks and to `digits` significant digits inside them; else where they first differ."""
    if digits is None:
        return None if old_blocks == new_blocks else where
    for a, b in zip(old_blocks, new_blocks):
        if a.kind != "stage" and a.body != b.body:
            return f"{where}:{a.line}: the {a.kind} block {a.arg}"
        if a.kind == "stage":
            for k, (x, y) in enumerate(zip(a.body, b.body)):
                if not numbers_agree(x, y, digits):
                    return f"{where}:{a.line + 1 + k}: stage {a.arg}: {x.strip()!r} now reads {y.strip()!r}"
            if len(a.body) != len(b.body):
                return f"{where}:{a.line}: stage {a.arg} has {len(b.body)} lines, not {len(a.body)}"
    return None


def prose_value(text: str, language: str) -> tuple[float, int] | None:
    """(value, decimals) of a number as the prose of `language` writes it; None for a whole number."""
    text = text.replace("−", "-")
    if language == "tr" and "," in text:                 # Turkish prose: 1.024,5
        text = text.replace(".", "").replace(",", ".")
    elif language == "tr" and TURKISH_THOUSANDS.fullmatch(text):
        return None                                      # 52.480: a whole number
    else:                                                # English, or a formula's 0.5373 in Turkish
        text = text.replace(",", "")
    if text.count(".") != 1:
        return None
    return float(text), len(text.split(".")[1])


def prose_problems(lines: list[str], blocks, language: str, where: str) -> list[str]:
    """Every number with two or more decimals in the prose of a chapter (its lines outside blocks, code fences
    and `code spans`) that no stage or code block of the chapter holds, rounded as the prose rounds it, and
    that no `numbers not from a stage` comment declares."""
    in_block, known, declared = set(), [], set()
    for block in blocks:
        in_block.update(range(block.line, block.line + len(block.body) + 2))
        if block.kind in ("stage", "code"):
            known += [float(x) for line in block.body for x in NUMBER.findall(line)]
    for line in lines:
        found = DECLARED.match(line)
        if found:
            declared.update(x for x in PROSE_NUMBER.findall(found[1]))
    problems, fenced = [], False
    for number, line in enumerate(lines, start=1):
        if line.startswith("```"):
            fenced = not fenced
        if fenced or number in in_block or line.startswith("```") or DECLARED.match(line):
            continue
        for text in PROSE_NUMBER.findall(CODE_SPAN.sub("", line)):
            parsed = prose_value(text, language)
            if parsed is None or parsed[1] < 2 or text in declared:
                continue
            value, decimals = parsed
            if not any(abs(round(abs(k), decimals) - abs(value)) < 10 ** -(decimals + 3) for k in known):
                problems.append(f"{where}:{number}: {text} is in no stage or code block of this chapter "
                                f"(quote the block's number, or declare it in <!-- numbers not from a stage: -->)")
    return problems
