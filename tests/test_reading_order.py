"""One reading order, everywhere: the code, the lesson and the README agree.

`minillm.COURSE` (minillm/__init__.py) is the order of the course modules, by dependency: each imports only
those above it (tests/test_layout.py). The lesson teaches them in the same order: lesson/README.md's chapter
table names each chapter's modules (its "home" modules), and

1. the chapters' home modules, read in chapter order, are exactly COURSE, each module once;
2. the chapter files are numbered 01, 02, ... in the table's order, in every language, and exist;
3. a chapter quotes (`<!-- code: minillm/X.py::name -->`) only course modules taught in it or before it
   (the machinery may be quoted anywhere: it is not part of the reading order);
4. README.md's reading-order line lists COURSE, and its course map introduces the modules in COURSE order
   (a row belongs to the first course module its implementation cell names).
Each checker returns its violations as "file:line: [rule] why"; the `test_self_*` functions run them on tiny
repositories built in tmp_path.
"""
from __future__ import annotations

import pathlib
import re

from test_layout import _cells, _write, read_layout

REPO = pathlib.Path(__file__).resolve().parent.parent
LANGUAGES = ("tr", "en")
_ROW = re.compile(r"^\| *(\d+) *\|(.*)\|\s*$")
_LINK = re.compile(r"\]\(((\w+)/(\d\d)-[\w-]+\.md)\)")
_QUOTE = re.compile(r"^<!-- code: minillm/([\w/]+)\.py::")
_MODULE = re.compile(r"`([a-z_]+)`")
_ARROWS = re.compile(r"^`[a-z_]+`( → `[a-z_]+`)+ *$")


def chapter_table(root: pathlib.Path) -> tuple[list[tuple[int, dict[str, str], list[str], int]], list[str]]:
    """lesson/README.md's chapters: (number, {language: file}, home modules, line), and problems."""
    index = root / "lesson" / "README.md"
    if not index.exists():
        return [], ["lesson/README.md:1: [reading order] there is no lesson/README.md"]
    chapters, problems = [], []
    for line_no, line in enumerate(index.read_text(encoding="utf-8").splitlines(), start=1):
        row = _ROW.match(line)
        if not row:
            continue
        cells = _cells(line)
        files = {lang: path for path, lang, _ in _LINK.findall(line)}
        chapters.append((int(row[1]), files, _MODULE.findall(cells[-1]), line_no))
    if not chapters:
        problems.append("lesson/README.md:1: [reading order] no chapter table (| N | ... | `module` |)")
    return chapters, problems


def check_chapters(root: pathlib.Path) -> list[str]:
    """Rules 1-3."""
    course = list(read_layout(root)[0]["COURSE"])
    chapters, problems = chapter_table(root)
    home: dict[str, int] = {}
    for position, (number, files, modules, line) in enumerate(chapters, start=1):
        where = f"lesson/README.md:{line}: [reading order]"
        if number != position:
            problems.append(f"{where} chapter {number} is row {position} of the table")
        for lang in LANGUAGES:
            path = files.get(lang)
            if path is None or not path.split("/")[-1].startswith(f"{number:02d}-"):
                problems.append(f"{where} chapter {number} needs a {lang}/{number:02d}-*.md link")
            elif not (root / "lesson" / path).exists():
                problems.append(f"{where} lesson/{path} does not exist")
        for module in modules:
            home.setdefault(module, number)
    taught = [m for _, _, modules, _ in chapters for m in modules]
    if taught != course:
        problems.append(f"lesson/README.md:1: [reading order] the chapters' modules, in chapter order, are "
                        f"{taught}; minillm.COURSE is {course}")
    for number, files, _, _ in chapters:
        for path in files.values():
            file = root / "lesson" / path
            if not file.exists():
                continue
            for line_no, line in enumerate(file.read_text(encoding="utf-8").splitlines(), start=1):
                quote = _QUOTE.match(line)
                if quote and "/" not in quote[1] and home.get(quote[1], 0) > number:
                    problems.append(f"lesson/{path}:{line_no}: [reading order] chapter {number} quotes "
                                    f"minillm/{quote[1]}.py, taught in chapter {home[quote[1]]}")
    return problems


def check_readme(root: pathlib.Path) -> list[str]:
    """Rule 4."""
    course = list(read_layout(root)[0]["COURSE"])
    index = {m: i for i, m in enumerate(course)}
    lines = (root / "README.md").read_text(encoding="utf-8").splitlines()
    problems = []
    # the reading-order line: `a` → `b` → ..., possibly over several lines
    start = next((i for i, line in enumerate(lines) if _ARROWS.match(line.rstrip(" →"))
                  or line.startswith(f"`{course[0]}` →")), None)
    if start is None:
        problems.append(f"README.md:1: [reading order] no line `{course[0]}` → ... lists the course")
    else:
        block = []
        for line in lines[start:]:
            if not line.strip():
                break
            block.append(line)
        listed = _MODULE.findall(" ".join(block))
        if listed != course:
            problems.append(f"README.md:{start + 1}: [reading order] lists {listed}; COURSE is {course}")
    last, last_line = -1, 0
    in_map = False
    for line_no, line in enumerate(lines, start=1):
        if line.startswith("<!-- course-map:"):
            in_map = True
        elif line.startswith("<!-- /course-map:"):
            in_map = False
        elif in_map and line.startswith("|") and not line.startswith("| concept") and "---" not in line:
            cells = _cells(line)
            named = [m for m in re.findall(r"(?:minillm/)?([a-z_]+)\.py", cells[1]) if m in index]
            if not named:
                continue
            if index[named[0]] < last:
                problems.append(f"README.md:{line_no}: [reading order] the course map's row for "
                                f"{named[0]}.py comes after a row for {course[last]}.py (line {last_line})")
            elif index[named[0]] > last:
                last, last_line = index[named[0]], line_no
    return problems


def test_the_lesson_follows_the_course_order():
    problems = check_chapters(REPO)
    assert not problems, "\n".join(problems)


def test_the_readme_follows_the_course_order():
    problems = check_readme(REPO)
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------- the checkers, on tiny repositories

_INIT = 'COURSE = ("alpha", "beta", "gamma")\nMACHINERY = ("machinery.tool",)\nALIASES = ()\n'
_INDEX = """\
| # | Türkçe | English | kod · code |
| --- | --- | --- | --- |
| 1 | [Bir](tr/01-one.md) | [One](en/01-one.md) | `alpha`, `beta` |
| 2 | [İki](tr/02-two.md) | [Two](en/02-two.md) | `gamma` |
"""
_README = """\
# x

`alpha` → `beta` →
`gamma`

<!-- course-map:all -->
| concept | implementation | test | reference |
| --- | --- | --- | --- |
| a | `minillm/alpha.py:f` | `t` | r |
| g | `gamma.py:h`, `alpha.py:f` | `t` | r |
<!-- /course-map:all -->
"""


def _repo(tmp_path, index=_INDEX, readme=_README, two="<!-- code: minillm/gamma.py::h -->\n"):
    files = {"minillm/__init__.py": _INIT, "lesson/README.md": index, "README.md": readme}
    for lang in LANGUAGES:
        files[f"lesson/{lang}/01-one.md"] = "<!-- code: minillm/machinery/tool.py::x -->\n"
        files[f"lesson/{lang}/02-two.md"] = two
    return _write(tmp_path, files)


def test_self_chapters(tmp_path):
    assert check_chapters(_repo(tmp_path)) == []
    _repo(tmp_path, index=_INDEX.replace("`alpha`, `beta`", "`beta`, `alpha`"))
    problems = check_chapters(tmp_path)
    assert len(problems) == 1 and "['beta', 'alpha', 'gamma']" in problems[0], problems
    (tmp_path / "lesson/en/01-one.md").write_text("<!-- code: minillm/gamma.py::h -->\n")
    _repo(tmp_path)
    (tmp_path / "lesson/en/01-one.md").write_text("text\n<!-- code: minillm/gamma.py::h -->\n")
    problems = check_chapters(tmp_path)
    assert problems == ["lesson/en/01-one.md:2: [reading order] chapter 1 quotes minillm/gamma.py, "
                        "taught in chapter 2"], problems
    _repo(tmp_path, index=_INDEX.replace("(en/02-two.md)", "(en/03-two.md)"))
    assert any("chapter 2 needs a en/02-*.md link" in p for p in check_chapters(tmp_path))


def test_self_readme(tmp_path):
    assert check_readme(_repo(tmp_path)) == []
    _repo(tmp_path, readme=_README.replace("`alpha` → `beta` →", "`beta` → `alpha` →"))
    problems = check_readme(tmp_path)
    assert len(problems) == 1 and "lists ['beta', 'alpha', 'gamma']" in problems[0], problems
    swapped = _README.replace("| a | `minillm/alpha.py:f`", "| a | `minillm/beta.py:f`").replace(
        "| g | `gamma.py:h`, `alpha.py:f`", "| g | `alpha.py:f`")
    _repo(tmp_path, readme=swapped)
    problems = check_readme(tmp_path)
    assert len(problems) == 1 and "README.md:10:" in problems[0] and "row for alpha.py comes after" in \
        problems[0], problems
