"""The lesson's chapters (lesson/tr/*.md, lesson/en/*.md), kept in step with the code.

A chapter is Markdown written by hand, with three kinds of block that are generated. Each sits between an
opening and a closing HTML comment (invisible when the Markdown is rendered); the text between them is
rewritten by `python -m minillm.machinery.chapters`, and tests/test_lesson.py fails when it is out of date:

    <!-- code: minillm/attention.py::scaled_dot_product_attention -->    the function's source, as it is now
    <!-- /code -->
    <!-- stage: masks -->        the stage printer's output for that stage (`python -m minillm.lesson`)
    <!-- /stage -->
    <!-- exercise: {"id": "...", "file": "minillm/....py", "find": "...", "replace": "...",
                    "test": "tests/test_....py::test_..."} -->            (on one line)
    <!-- /exercise -->           a break-it exercise: the change as a diff, and the command that runs its test

A quote names a function, a class or a method (`Class.method`), never line numbers, so it cannot drift: if the
name goes, the reference fails to resolve; if the code changes, the quote is regenerated. An exercise is
proven by running its named test on a copy of the repository with the change applied (`check_exercise`): the
test must fail there and pass on the code as it is.
"""
import ast
import difflib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import NamedTuple

from minillm.files import atomic_write
from minillm.machinery.cli import OneLineParser, fail
from minillm.machinery.numbers import first_difference, prose_problems

ROOT = Path(__file__).resolve().parents[2]
LANGUAGES = ("tr", "en")                 # Turkish first: the course is Turkish; the code stays English
QUESTION = "Anayasanın 2. maddesi neyi düzenler?"    # the running example every chapter follows
KINDS = ("code", "stage", "exercise")
OPEN = re.compile(r"^<!-- (code|stage|exercise): (.+?) -->$")
CLOSE = re.compile(r"^<!-- /(code|stage|exercise) -->$")
STAGE_HEADER = re.compile(r"^== ([a-z-]+): .* ==$")
EXERCISE_KEYS = ("id", "file", "find", "replace", "test")


class ChapterError(ValueError):
    """A chapter that cannot be kept in step: the message names the file, the line and what was expected."""


class Block(NamedTuple):
    kind: str          # "code", "stage" or "exercise"
    arg: str           # what the opening comment names
    line: int          # 1-based line of the opening comment
    body: list[str]    # the generated lines between the two comments


class Exercise(NamedTuple):
    id: str            # a short name, the same in every language
    file: str          # the module to break, relative to the repository root
    find: str          # the text to change: it must occur exactly once in the file
    replace: str       # what it becomes
    test: str          # the pytest node id that must then fail: tests/test_x.py::test_name


def chapter_files(root: Path = ROOT, language: str = "tr") -> list[Path]:
    return sorted((root / "lesson" / language).glob("*.md"))


def parse(text: str, where: str) -> tuple[list[str], list[Block]]:
    """A chapter's lines and its generated blocks, in order. Blocks do not nest and every one is closed."""
    lines = text.split("\n")
    blocks, open_block = [], None
    for number, line in enumerate(lines, 1):
        opened, closed = OPEN.match(line), CLOSE.match(line)
        if opened and open_block is not None:
            raise ChapterError(f"{where}:{number}: a {opened[1]} block opens inside the {open_block.kind} block "
                               f"of line {open_block.line}; expected <!-- /{open_block.kind} --> first")
        if opened:
            open_block = Block(opened[1], opened[2], number, [])
        elif closed:
            if open_block is None or closed[1] != open_block.kind:
                raise ChapterError(f"{where}:{number}: <!-- /{closed[1]} --> closes nothing")
            blocks.append(open_block)
            open_block = None
        elif open_block is not None:
            open_block.body.append(line)
    if open_block is not None:
        raise ChapterError(f"{where}:{open_block.line}: the {open_block.kind} block is never closed "
                           f"(expected <!-- /{open_block.kind} -->)")
    return lines, blocks


# ---------------------------------------------------------------- code quotes

def resolve(ref: str, root: Path = ROOT) -> tuple[int, str]:
    """'minillm/x.py::Name' or '...::Class.method' -> (its first line, its source with the indent removed)."""
    path, _, name = ref.partition("::")
    file = root / path
    if not name or not path.startswith("minillm/") or not file.is_file():
        raise ChapterError(f"code reference {ref!r}: expected minillm/<file>.py::<function, class or "
                           f"Class.method> naming a file that exists")
    source = file.read_text(encoding="utf-8")
    scope = ast.parse(source).body
    node = None
    for part in name.split("."):
        node = next((n for n in scope if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                     and n.name == part), None)
        if node is None:
            raise ChapterError(f"code reference {ref!r}: {part} is not defined in {path}")
        scope = node.body
    first = min([node.lineno] + [d.lineno for d in node.decorator_list])   # the decorators belong to it
    lines = source.split("\n")[first - 1:node.end_lineno]
    return first, textwrap.dedent("\n".join(lines))


def render_code(ref: str, root: Path = ROOT) -> list[str]:
    first, source = resolve(ref, root)
    path, _, name = ref.partition("::")
    return ["```python", f"# {path}, line {first}: {name}", *source.split("\n"), "```"]


# ---------------------------------------------------------------- break-it exercises

def read_exercise(spec: str) -> Exercise:
    """The JSON of an exercise comment -> Exercise; every key present, nothing else, all strings."""
    try:
        fields = json.loads(spec)
    except json.JSONDecodeError as err:
        raise ChapterError(f"exercise {spec[:60]!r}: not JSON ({err.msg}); expected an object with the keys "
                           f"{', '.join(EXERCISE_KEYS)}") from None
    if not isinstance(fields, dict) or sorted(fields) != sorted(EXERCISE_KEYS) \
            or not all(isinstance(v, str) and (v or k == "replace") for k, v in fields.items()):
        raise ChapterError(f"exercise {spec[:60]!r}: expected exactly the keys {', '.join(EXERCISE_KEYS)}, "
                           f"each a string, non-empty but for replace (a deletion)")
    return Exercise(**fields)


def broken_source(ex: Exercise, root: Path = ROOT) -> tuple[str, str]:
    """The file's source as it is and with the exercise's change applied."""
    file = root / ex.file
    if not ex.file.startswith("minillm/") or not file.is_file():
        raise ChapterError(f"exercise {ex.id}: file {ex.file!r} does not exist; expected a minillm/ module")
    source = file.read_text(encoding="utf-8")
    if source.count(ex.find) != 1:
        raise ChapterError(f"exercise {ex.id}: the text to change occurs {source.count(ex.find)} times in "
                           f"{ex.file}, expected exactly once: {ex.find!r}")
    test_file, _, test_name = ex.test.partition("::")
    if not test_name or not (root / test_file).is_file() or \
            not re.search(rf"^def {re.escape(test_name.split('[')[0])}\(", (root / test_file).read_text(), re.M):
        raise ChapterError(f"exercise {ex.id}: no test {ex.test!r}; expected tests/<file>.py::<test function>")
    return source, source.replace(ex.find, ex.replace)


def render_exercise(ex: Exercise, root: Path = ROOT) -> list[str]:
    """The change as a unified diff of the lines it touches, and the command that runs the named test. The
    command asks for the tests' "ci" hypothesis profile: the property tests then draw the examples the proof
    (`check_exercise`, profile "mutation": ci's examples without shrinking) drew, so the reader sees the verdict
    the lesson's test saw, not one that depends on a random draw."""
    source, broken = broken_source(ex, root)
    diff = difflib.unified_diff(source.split("\n"), broken.split("\n"), ex.file, f"{ex.file} (broken)",
                                n=0, lineterm="")
    return ["```diff", *diff, "```",
            "```bash", f"HYPOTHESIS_PROFILE=ci .venv/bin/python -m pytest -q {ex.test}", "```"]


def copy_repository(root: Path, into: Path) -> Path:
    """The package, the tests and the data, copied: what a named test needs (no run directories, no venv)."""
    skip = shutil.ignore_patterns("__pycache__", ".hypothesis", ".pytest_cache")
    for part in ("minillm", "tests", "data"):
        shutil.copytree(root / part, into / part, ignore=skip)
    return into


def run_tests(where: Path, tests: list[str]) -> tuple[int, str]:
    """pytest on the given node ids in a copy of the repository: (exit status, output). The tests' hypothesis
    profile "mutation" (tests/conftest.py) makes the result the same at every run and skips shrinking."""
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rfEs", "-p", "no:cacheprovider", *tests],
                          cwd=where, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "HYPOTHESIS_PROFILE": "mutation"})
    return done.returncode, done.stdout + done.stderr


def check_exercise(ex: Exercise, root: Path = ROOT) -> tuple[bool, str]:
    """Apply the exercise to a copy of the repository and run its test: (the test failed, why in one line).

    Caught means pytest's exit status 1 (a test failed) and the named test among the failures; an import or
    collection error (status 2) is not a failing test, it is a broken exercise."""
    _, broken = broken_source(ex, root)
    with tempfile.TemporaryDirectory(prefix=f"minillm-exercise-{ex.id}-") as tmp:
        copy = copy_repository(root, Path(tmp))
        (copy / ex.file).write_text(broken, encoding="utf-8")
        status, output = run_tests(copy, [ex.test])
    failed = status == 1 and re.search(rf"^FAILED {re.escape(ex.test)}\b", output, re.M) is not None
    last = output.strip().split("\n")[-1] if output.strip() else "(no output)"
    return failed, f"exit status {status}: {last}"


# ---------------------------------------------------------------- refreshing a chapter

def stage_outputs(checkpoint: str | None, question: str = QUESTION) -> dict[str, list[str]]:
    """Run the stage printer once and split its output by stage: {name: lines}."""
    command = [sys.executable, "-m", "minillm.lesson", question] + (["--checkpoint", checkpoint] if checkpoint else [])
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise ChapterError(f"the stage printer failed (exit status {done.returncode}): {done.stderr.strip()}")
    stages, current = {}, None
    for line in done.stdout.rstrip("\n").split("\n"):
        header = STAGE_HEADER.match(line)
        if header:
            current = stages.setdefault(header[1], [])
        if current is not None:
            current.append(line)
    for lines in stages.values():
        while lines and not lines[-1].strip():
            lines.pop()
    return stages


def refresh(text: str, where: str, root: Path = ROOT, stages: dict[str, list[str]] | None = None) -> str:
    """The chapter with its code and exercise blocks regenerated, and its stage blocks too when `stages`."""
    lines, blocks = parse(text, where)
    out, i = [], 0
    for block in blocks:
        out += lines[i:block.line]                                 # the hand-written text and the opening
        if block.kind == "code":
            body = render_code(block.arg, root)
        elif block.kind == "exercise":
            body = render_exercise(read_exercise(block.arg), root)
        elif stages is None:
            body = block.body
        elif block.arg in stages:
            body = ["```text", *stages[block.arg], "```"]
        else:
            raise ChapterError(f"{where}:{block.line}: no stage {block.arg!r}; the printer has "
                               f"{', '.join(stages)}")
        out += body + [f"<!-- /{block.kind} -->"]
        i = block.line + len(block.body) + 1
    return "\n".join(out + lines[i:])


def exercises(root: Path = ROOT) -> list[tuple[str, Exercise]]:
    """Every exercise in the Turkish chapters, with the chapter it is in."""
    found = []
    for path in chapter_files(root, "tr"):
        _, blocks = parse(path.read_text(encoding="utf-8"), str(path.relative_to(root)))
        found += [(path.name, read_exercise(b.arg)) for b in blocks if b.kind == "exercise"]
    return found


def main(argv=None) -> int:
    parser = OneLineParser(prog="python -m minillm.machinery.chapters", description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a chapter is out of date")
    parser.add_argument("--stages", metavar="CHECKPOINT", help="also re-run the stage printer with this run "
                        "directory and replace the stage blocks ('fresh': a freshly initialised model)")
    parser.add_argument("--digits", type=int, metavar="N", help="with --check --stages: numbers in the stage "
                        "blocks need agree only to N significant digits (another machine's rounding)")
    parser.add_argument("--exercises", nargs="*", metavar="ID", help="prove the exercises (all, or these ids): "
                        "each named test must fail on a broken copy")
    args = parser.parse_args(argv)
    if args.digits is not None and not (args.check and args.stages and args.digits >= 1):
        parser.error(f"--digits must be >= 1 and comes with --check --stages RUN, got --digits {args.digits}")
    try:
        if args.exercises is not None:
            chosen = [(c, ex) for c, ex in exercises() if not args.exercises or ex.id in args.exercises]
            unknown = sorted(set(args.exercises) - {ex.id for _, ex in chosen})
            if unknown:
                raise ChapterError(f"no exercise {', '.join(unknown)}; the ids are in the chapters' exercise blocks")
            missed = 0
            for chapter, ex in chosen:
                caught, why = check_exercise(ex)
                missed += not caught
                print(f"{'caught' if caught else 'NOT CAUGHT'}  {chapter} {ex.id}: {ex.test} ({why})")
            return 1 if missed else 0
        stages = None if args.stages is None else stage_outputs(None if args.stages == "fresh" else args.stages)
        stale, prose = [], []
        for language in LANGUAGES:
            for path in chapter_files(ROOT, language):
                text = path.read_text(encoding="utf-8")
                where = str(path.relative_to(ROOT))
                new = refresh(text, where, ROOT, stages)
                difference = None
                if new != text:
                    digits = args.digits if args.check else None
                    difference = first_difference(parse(text, where)[1], parse(new, where)[1], where, digits)
                if difference is not None:
                    stale.append(difference)
                    if not args.check:
                        atomic_write(path, lambda f, new=new: f.write(new), binary=False)
                prose += prose_problems(*parse(new, where), language, where)
        print(f"{'out of date' if args.check else 'refreshed'}: {', '.join(stale)}" if stale else "up to date")
        for problem in prose:
            print(problem)
        return 1 if (stale and args.check) or prose else 0
    except ChapterError as err:
        return fail(parser.prog, err)


if __name__ == "__main__":
    sys.exit(main())
