"""The package layout, checked: the rules below are the project's, stated here in full.

`minillm/__init__.py` names every module in three tuples: COURSE (the reading order), MACHINERY (in
dependency order) and ALIASES (compatibility names that re-export a machinery module). Six rules follow:

1. every module under minillm/ is listed in exactly one tuple, and every listed name has a file;
2. a course module imports only course modules above it; a machinery module imports the course and the
   machinery above it; an alias imports only machinery; imports inside functions count too;
3. no private name (`_x`) is used across modules;
4. no module is longer than 350 lines;
5. no block of six code lines is repeated, as the same lines or the same shape with other names;
6. every implementation and test named in the README's course map exists.

Each rule is a checker that takes a repository root and returns its violations as "file:line: [rule] why".
The `test_*` functions run them on this repository; the `test_self_*` functions run them on tiny packages
built in tmp_path, one that breaks the rule and one that keeps it, so a checker that finds nothing is known
to be able to find something. Everything is read with `ast` and `tokenize`: nothing is imported.
"""
from __future__ import annotations

import ast
import io
import keyword
import pathlib
import re
import textwrap
import tokenize
from collections import defaultdict

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
PACKAGE = "minillm"
LAYERS = ("COURSE", "MACHINERY", "ALIASES")
MAX_LINES = 350
WINDOW = 6          # rule 5: this many consecutive code lines repeated is a copy


# ---------------------------------------------------------------- reading the package

def _rel(root: pathlib.Path, path: pathlib.Path) -> str:
    return path.relative_to(root).as_posix()


def _py_files(root: pathlib.Path) -> list[pathlib.Path]:
    """Every .py file under the package, __init__.py files included, in a stable order."""
    return sorted(p for p in (root / PACKAGE).rglob("*.py") if "__pycache__" not in p.parts)


def _dotted(root: pathlib.Path, path: pathlib.Path) -> str:
    """minillm/machinery/run.py -> "machinery.run"; minillm/machinery/__init__.py -> "machinery"."""
    parts = list(path.relative_to(root / PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules(root: pathlib.Path) -> dict[str, pathlib.Path]:
    """Dotted name -> file, for every module that is not an __init__.py."""
    return {_dotted(root, p): p for p in _py_files(root) if p.name != "__init__.py"}


def _parse(root: pathlib.Path, path: pathlib.Path, rule: str, problems: list[str]) -> ast.Module | None:
    try:
        return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except SyntaxError as err:
        problems.append(f"{_rel(root, path)}:{err.lineno}: [{rule}] cannot parse: {err.msg}")
        return None


def read_layout(root: pathlib.Path) -> tuple[dict[str, tuple[str, ...]], dict[str, int], list[str]]:
    """COURSE, MACHINERY and ALIASES from minillm/__init__.py, the line of each, and what is wrong with them."""
    init = root / PACKAGE / "__init__.py"
    rel = _rel(root, init) if init.exists() else f"{PACKAGE}/__init__.py"
    problems: list[str] = []
    layout: dict[str, tuple[str, ...]] = {}
    lines: dict[str, int] = {}
    tree = _parse(root, init, "layout", problems) if init.exists() else None
    for node in tree.body if tree else []:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, ast.AnnAssign) and node.value is not None else []
        for target in targets:
            if isinstance(target, ast.Name) and target.id in LAYERS:
                try:
                    value = ast.literal_eval(node.value)
                except ValueError:
                    value = None
                if not isinstance(value, tuple) or not all(isinstance(v, str) for v in value):
                    problems.append(f"{rel}:{node.lineno}: [layout] {target.id} must be a literal tuple of "
                                    f"module names")
                    continue
                layout[target.id], lines[target.id] = value, node.lineno
    for name in LAYERS:
        if name not in layout:
            problems.append(f"{rel}:1: [layout] {name} is not defined (a tuple of module names)")
            layout[name], lines[name] = (), 1
    return layout, lines, problems


# ---------------------------------------------------------------- rule 1: every module listed exactly once

def check_listing(root: pathlib.Path) -> list[str]:
    layout, lines, problems = read_layout(root)
    init = f"{PACKAGE}/__init__.py"
    modules = _modules(root)
    seen: dict[str, str] = {}
    for layer in LAYERS:
        for name in layout[layer]:
            if name in seen:
                problems.append(f"{init}:{lines[layer]}: [rule 1: listed once] {name!r} is listed in "
                                f"{seen[name]} and again in {layer}")
                continue
            seen[name] = layer
            if name not in modules:
                problems.append(f"{init}:{lines[layer]}: [rule 1: listed once] {layer} names {name!r} but "
                                f"there is no {PACKAGE}/{name.replace('.', '/')}.py")
    for name, path in modules.items():
        if name not in seen:
            problems.append(f"{_rel(root, path)}:1: [rule 1: listed once] module {name!r} is in none of "
                            f"COURSE, MACHINERY, ALIASES")
    return problems


# ---------------------------------------------------------------- imports, resolved to package modules

def _package_of(root: pathlib.Path, path: pathlib.Path) -> list[str]:
    """The package a file's relative imports start from, as parts below minillm."""
    return list(path.relative_to(root / PACKAGE).parts[:-1])


def _from_base(root: pathlib.Path, path: pathlib.Path, node: ast.ImportFrom) -> list[str] | None:
    """The parts below minillm that `from X import ...` reads from, or None when X is outside the package."""
    if node.level == 0:
        parts = (node.module or "").split(".")
        if parts[0] != PACKAGE:
            return None
        return parts[1:]
    base = _package_of(root, path)
    if node.level - 1 > len(base):
        return None
    base = base[:len(base) - (node.level - 1)]
    return base + (node.module.split(".") if node.module else [])


def package_imports(root: pathlib.Path, path: pathlib.Path, tree: ast.Module, modules: set[str]):
    """Each import of the package in a file: (line, target, names, bound).

    target is the dotted module name below minillm ("" for minillm itself); names are the names taken from it
    by `from target import ...` (empty for `import`); bound are the local names the statement binds.
    `from minillm import x` and `from . import x` count as importing module x when x is a file.
    `importlib.import_module("minillm.x")` and `__import__("minillm.x")` count as importing x. modules is
    every dotted name below minillm that is a file (packages included).
    """
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == PACKAGE:
                    bound = alias.asname or PACKAGE
                    yield node.lineno, ".".join(parts[1:]), [], [bound]
        elif isinstance(node, ast.ImportFrom):
            base = _from_base(root, path, node)
            if base is None:
                continue
            base_name = ".".join(base)
            plain = []
            for alias in node.names:
                sub = ".".join(base + [alias.name])
                if sub in modules:
                    yield node.lineno, sub, [], [alias.asname or alias.name]
                else:
                    plain.append(alias)
            if plain:
                yield (node.lineno, base_name, [a.name for a in plain],
                       [a.asname or a.name for a in plain if a.name != "*"])
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and getattr(node.func, "attr", getattr(node.func, "id", None)) in ("import_module", "__import__")):
            parts = node.args[0].value.split(".")
            if parts[0] == PACKAGE:
                yield node.lineno, ".".join(parts[1:]), [], []


# ---------------------------------------------------------------- rule 2: imports follow the layers

def check_imports(root: pathlib.Path) -> list[str]:
    layout, _, problems = read_layout(root)
    course, machinery, aliases = layout["COURSE"], layout["MACHINERY"], layout["ALIASES"]
    listed = set(course) | set(machinery) | set(aliases)
    files = _py_files(root)
    modules = {_dotted(root, p) for p in files}
    packages = {_dotted(root, p) for p in files if p.name == "__init__.py"}
    rule = "rule 2: imports follow the layers"
    for path in files:
        me = _dotted(root, path)
        is_init = path.name == "__init__.py"
        if not is_init and me not in listed:
            continue    # rule 1 reports it; it has no layer to check against
        tree = _parse(root, path, rule, problems)
        if tree is None:
            continue
        where = _rel(root, path)
        for line, target, _names, _bound in package_imports(root, path, tree, modules):
            shown = f"{PACKAGE}.{target}" if target else PACKAGE
            if is_init:
                problems.append(f"{where}:{line}: [{rule}] an __init__.py runs before every module of its "
                                f"package, so it must import none of them; it imports {shown}")
                continue
            if target not in listed:
                what = ("the package root" if target == "" else "a package, not a module" if target in packages
                        else "not a module listed in COURSE, MACHINERY or ALIASES")
                problems.append(f"{where}:{line}: [{rule}] {me} imports {shown}, which is {what}")
                continue
            why = None
            if me in course:
                if target in machinery:
                    why = "the course never imports the machinery"
                elif target in aliases:
                    why = "the course never imports an alias of the machinery"
                elif course.index(target) >= course.index(me):
                    why = f"{target!r} does not come before {me!r} in COURSE (nothing refers forward)"
            elif me in machinery:
                if target in aliases:
                    why = f"{target!r} is an alias; import the machinery module it re-exports"
                elif target in machinery and machinery.index(target) >= machinery.index(me):
                    why = f"{target!r} does not come before {me!r} in MACHINERY"
            elif target not in machinery:
                why = "an alias only re-exports a machinery module"
            if why:
                problems.append(f"{where}:{line}: [{rule}] {me} imports {shown}: {why}")
    return problems


# ---------------------------------------------------------------- rule 3: no private name across modules

def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def check_private_names(root: pathlib.Path) -> list[str]:
    problems: list[str] = []
    rule = "rule 3: no private name across modules"
    files = _py_files(root)
    modules = {_dotted(root, p) for p in files}
    for path in files:
        tree = _parse(root, path, rule, problems)
        if tree is None:
            continue
        where = _rel(root, path)
        bound: set[str] = set()
        for line, target, names, names_bound in package_imports(root, path, tree, modules):
            bound.update(names_bound)
            shown = f"{PACKAGE}.{target}" if target else PACKAGE
            for name in names:
                if _private(name):
                    problems.append(f"{where}:{line}: [{rule}] imports {name} from {shown}; make it public "
                                    f"or keep its use in its own module")
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and _private(node.attr):
                base = node.value
                while isinstance(base, ast.Attribute):
                    base = base.value
                if isinstance(base, ast.Name) and base.id in bound:
                    problems.append(f"{where}:{node.lineno}: [{rule}] {ast.unparse(node)} reaches into "
                                    f"another module's private name {node.attr}")
    return problems


# ---------------------------------------------------------------- rule 4: modules are short

def check_length(root: pathlib.Path, limit: int = MAX_LINES) -> list[str]:
    problems = []
    for path in _py_files(root):
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > limit:
            problems.append(f"{_rel(root, path)}:{limit + 1}: [rule 4: at most {limit} lines] "
                            f"{n} lines; split it by concept")
    return problems


# ---------------------------------------------------------------- rule 5: no repeated blocks

# Tokens that carry no structure on their own: a line made of these and fewer than two other tokens (`N,`,
# `S,`, `)`, `pass`, `else:`, `try:`) is not a code line. Commas and brackets alone make the items of a long
# literal or call look alike, so they do not count.
_FILLER = {"(", ")", "[", "]", "{", "}", ",", ":", ";"}
# Short lines (filler left out) that are common everywhere and say nothing about copying.
_TRIVIAL = {"return N", "raise N", "yield N", "@ N", "N = N", "N . N", "- 0", "N = 0", "N = S", "S : N",
            "S : S", "S : 0", "* N", "** N", "N = None", "N = True", "N = False", "return None", "return True",
            "return False", "del N", "import N", "global N", "nonlocal N", "assert N"}


# A field declaration, `name: type = default  # why`: a dataclass is a list of these, and two dataclasses with
# the same field types look alike without sharing any logic.
_DECLARATION = re.compile(r"N :(?: [^=(]+?)?(?: = (?:- )?(?:0|S|N|None|True|False)(?: \. N)*)?")
# A line that starts a new definition: a window of repeated lines never spans two definitions, since the tail
# of one function and the head of the next are not a block anyone copied.
_DEFINITION = re.compile(r"(?:async )?(?:def|class) .*|@ .*")


def _fstring_tokens():
    return {getattr(tokenize, n) for n in ("FSTRING_START", "FSTRING_MIDDLE", "FSTRING_END") if hasattr(tokenize, n)}


def normalized_lines(text: str) -> dict[int, str]:
    """Line number -> the line's shape: names as N, numbers as 0, strings as S, keywords and operators kept.

    Only code lines are returned: blank, comment-only and docstring-only lines and lines with fewer than two
    meaningful tokens (a closing bracket, `N,`, `else:`, `pass`, `return N`, ...) are left out.
    """
    per_line: dict[int, list[str]] = defaultdict(list)
    fstring = _fstring_tokens()
    depth = 0       # inside an f-string (Python 3.12 splits them into parts): the whole string is one S
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
            tokenize.ENCODING, tokenize.ENDMARKER}
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type in fstring:
            if tok.type == getattr(tokenize, "FSTRING_START", None):
                if depth == 0:
                    per_line[tok.start[0]].append("S")
                depth += 1
            elif tok.type == getattr(tokenize, "FSTRING_END", None):
                depth -= 1
            continue
        if depth or tok.type in skip:
            continue
        if tok.type == tokenize.NAME:
            shape = tok.string if keyword.iskeyword(tok.string) else "N"
        elif tok.type == tokenize.NUMBER:
            shape = "0"
        elif tok.type == tokenize.STRING:
            shape = "S"
        else:
            shape = tok.string
        per_line[tok.start[0]].append(shape)
    code = {}
    for line, shapes in per_line.items():
        meaningful = [s for s in shapes if s not in _FILLER]
        form = " ".join(meaningful)
        if len(meaningful) < 2 or form in _TRIVIAL or _DECLARATION.fullmatch(" ".join(shapes)):
            continue
        code[line] = " ".join(shapes)
    return code


def check_duplicates(root: pathlib.Path, window: int = WINDOW) -> list[str]:
    problems: list[str] = []
    rule = f"rule 5: no repeated block of {window} code lines"
    files = []      # (relative path, [(line number, shape), ...])
    for path in _py_files(root):
        try:
            code = normalized_lines(path.read_text(encoding="utf-8"))
        except (tokenize.TokenError, SyntaxError) as err:
            problems.append(f"{_rel(root, path)}:1: [{rule}] cannot tokenize: {err}")
            continue
        files.append((_rel(root, path), sorted(code.items())))
    seen: dict[tuple[str, ...], list[tuple[int, int]]] = defaultdict(list)
    for f, (_, lines) in enumerate(files):
        starts = [0] * len(lines)   # index of the first line of the definition each line is in
        for i, (_, shape) in enumerate(lines):
            opens = _DEFINITION.fullmatch(shape) and not (i and lines[i - 1][1].startswith("@"))
            starts[i] = i if opens or i == 0 else starts[i - 1]
        for i in range(len(lines) - window + 1):
            if starts[i + window - 1] <= i:     # the window lies inside one definition
                seen[tuple(shape for _, shape in lines[i:i + window])].append((f, i))
    pairs = set()   # (file a, start a, file b, start b) of every repeated window
    for places in seen.values():
        first = places[0]
        for other in places[1:]:
            if other[0] != first[0] or other[1] - first[1] >= window:   # overlapping copies are one
                pairs.add(first + other)
    for fa, ia, fb, ib in sorted(pairs):
        if (fa, ia - 1, fb, ib - 1) in pairs:
            continue    # inside a run already reported from its start
        n = 0
        while (fa, ia + n, fb, ib + n) in pairs:
            n += 1
        (a, la), (b, lb) = files[fa], files[fb]
        end = window - 1 + n - 1
        problems.append(f"{a}:{la[ia][0]}-{la[ia + end][0]}: [{rule}] the same {end + 1} code lines (up to "
                        f"names and literals) as {b}:{lb[ib][0]}-{lb[ib + end][0]}; write it once and call it")
    return problems


# ---------------------------------------------------------------- rule 6: the README course map resolves

MISSING = object()      # rule 6: the file named before this entry does not exist (and is reported)
_CODE = re.compile(r"`([^`]*)`")
_HEADERS = (("concept",), ("implementation", "where"), ("test",), ("reference",))


def _cells(row: str) -> list[str]:
    """Split a markdown table row on the pipes that are not inside backticks."""
    cells, cell, in_code = [], [], False
    for ch in row.strip().strip("|"):
        if ch == "`":
            in_code = not in_code
        if ch == "|" and not in_code:
            cells.append("".join(cell).strip())
            cell = []
        else:
            cell.append(ch)
    cells.append("".join(cell).strip())
    return cells


def _module_level_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()

    def visit(body):
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                    names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
            elif isinstance(node, (ast.If, ast.Try, ast.With)):
                visit(node.body)
                visit(getattr(node, "orelse", []))
                visit(getattr(node, "finalbody", []))
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)
    visit(tree.body)
    return names


def _class_members(tree: ast.Module, cls: str, depth: int = 0) -> set[str] | None:
    """Methods, class attributes and self.attributes of a module-level class (and of its bases in the file)."""
    node = next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls), None)
    if node is None or depth > 10:
        return None
    members: set[str] = set()
    for item in node.body:
        if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            members.add(item.name)
        elif isinstance(item, (ast.Assign, ast.AnnAssign)):
            for target in item.targets if isinstance(item, ast.Assign) else [item.target]:
                members.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
    for sub in ast.walk(node):
        if (isinstance(sub, ast.Attribute) and isinstance(sub.ctx, ast.Store) and isinstance(sub.value, ast.Name)
                and sub.value.id == "self"):
            members.add(sub.attr)
    for base in node.bases:
        if isinstance(base, ast.Name):
            members |= _class_members(tree, base.id, depth + 1) or set()
    return members


def _test_names(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
            names.add(node.name)
    return names


def check_course_map(root: pathlib.Path) -> list[str]:
    readme = root / "README.md"
    rule = "rule 6: the course map resolves"
    if not readme.exists():
        return [f"README.md:1: [{rule}] there is no README.md"]
    pkg, tests = root / PACKAGE, root / "tests"
    test_files = {p.name: p for p in sorted(tests.glob("*.py"))}
    test_names = {name: _test_names(p) for name, p in test_files.items()}
    all_tests = set().union(*test_names.values()) if test_names else set()
    trees: dict[pathlib.Path, ast.Module | None] = {}
    problems: list[str] = []

    def tree_of(path):
        if path not in trees:
            trees[path] = _parse(root, path, rule, problems)
        return trees[path]

    def resolve(number, current, cls, entry):
        """Check one implementation entry; return the (file, class) the next bare entry refers to."""
        where = f"README.md:{number}: [{rule}]"
        m = re.fullmatch(r"(?:minillm/)?([\w./-]+\.(?:py|js|html|css))(?::([\w.]+))?|(\w+(?:\.\w+)?)", entry)
        if not m:
            problems.append(f"{where} cannot read the implementation entry `{entry}` (expected `file.py:Name`, "
                            f"`file.py:Class.method`, `file.py` or a name in the same file as the previous one)")
            return current, cls
        file, name, bare = m.groups()
        if file:
            current, cls = pkg / file, None
            if not current.is_file():
                problems.append(f"{where} `{entry}`: there is no {_rel(root, pkg)}/{file}")
                return MISSING, None
            if name is None:
                return current, None
        else:
            name = bare
            if current is MISSING:
                return current, cls     # its file is missing, and that is reported already
            if current is None:
                problems.append(f"{where} `{entry}` has no file before it in its cell")
                return None, None
        shown = _rel(root, current)
        if current.suffix != ".py":     # a page's script: the name must be defined in the text
            if not re.search(rf"(function\s+{re.escape(name)}\b|\b{re.escape(name)}\s*=)",
                             current.read_text(encoding="utf-8")):
                problems.append(f"{where} `{entry}`: {name} is not defined in {shown}")
            return current, None
        tree = tree_of(current)
        if tree is None:
            return current, None
        parts = name.split(".")
        if len(parts) > 2:
            problems.append(f"{where} `{entry}`: name one module-level object or Class.member")
            return current, cls
        if len(parts) == 2:
            members = _class_members(tree, parts[0])
            if members is None:
                problems.append(f"{where} `{entry}`: there is no class {parts[0]} in {shown}")
            elif parts[1] not in members:
                problems.append(f"{where} `{entry}`: class {parts[0]} in {shown} has no {parts[1]}")
            return current, parts[0]
        if name in _module_level_names(tree):
            return current, None
        if not file and cls is not None and name in (_class_members(tree, cls) or set()):
            return current, cls     # `Class.a`, `b`: b is another member of the same class
        problems.append(f"{where} `{entry}`: {name} is not defined at module level in {shown}"
                        + (f" nor in class {cls}" if not file and cls else ""))
        return current, cls

    def check_test(number, current, entry):
        where = f"README.md:{number}: [{rule}]"
        m = re.fullmatch(r"(?:tests/)?(?:(test_\w+\.py)|(test_\w+\.py)?::(\w+)|(test\w*))", entry)
        if not m:
            problems.append(f"{where} cannot read the test entry `{entry}` (expected `test_x.py::test_name`, "
                            f"`::test_name`, `test_name` or `test_x.py`)")
            return current
        only_file, file, name, bare = m.groups()
        if only_file or file:
            current = only_file or file
            if current not in test_files:
                problems.append(f"{where} `{entry}`: there is no tests/{current}")
                return MISSING
        if name and current is not MISSING:
            if current is None:
                problems.append(f"{where} `{entry}` has no test file before it in its cell")
            elif name not in test_names[current]:
                problems.append(f"{where} `{entry}`: tests/{current} has no test function {name}")
        if bare and bare not in all_tests:
            problems.append(f"{where} `{entry}`: no test function {bare} in tests/*.py")
        return current

    lines = readme.read_text(encoding="utf-8").splitlines()
    open_map: tuple[str, int] | None = None
    maps = 0
    in_table = False    # the first row of each table is its header
    for number, text in enumerate(lines, 1):
        start = re.fullmatch(r"\s*<!--\s*course-map:([\w-]+)\s*-->\s*", text)
        end = re.fullmatch(r"\s*<!--\s*/course-map:([\w-]+)\s*-->\s*", text)
        is_row = text.lstrip().startswith("|")
        if start:
            if open_map:
                problems.append(f"README.md:{number}: [{rule}] course-map:{start[1]} opens inside "
                                f"course-map:{open_map[0]} (line {open_map[1]})")
            open_map, maps = (start[1], number), maps + 1
        elif end:
            if not open_map or open_map[0] != end[1]:
                problems.append(f"README.md:{number}: [{rule}] /course-map:{end[1]} closes nothing")
            open_map = None
        if not (open_map and is_row):
            in_table = False
            continue
        cells = _cells(text)
        if all(re.fullmatch(r":?-+:?", c) for c in cells):
            continue
        if not in_table:
            in_table = True
            names = [c.lower() for c in cells]
            if len(names) != 4 or any(n not in ok for n, ok in zip(names, _HEADERS)):
                problems.append(f"README.md:{number}: [{rule}] the table's columns are {cells}, expected "
                                f"concept | implementation | test | reference")
            continue
        if len(cells) != 4:
            problems.append(f"README.md:{number}: [{rule}] the row has {len(cells)} cells, expected 4")
            continue
        current, cls = None, None
        for entry in _CODE.findall(cells[1]):
            current, cls = resolve(number, current, cls, entry.strip())
        current = None
        for entry in _CODE.findall(cells[2]):
            current = check_test(number, current, entry.strip())
    if open_map:
        problems.append(f"README.md:{open_map[1]}: [{rule}] course-map:{open_map[0]} is never closed")
    if maps == 0:
        problems.append(f"README.md:1: [{rule}] no <!-- course-map:NAME --> section found")
    return problems


# ---------------------------------------------------------------- the rules, on this repository

def _listing(problems: list[str]) -> str:
    """The violations, sorted by file and line, one per line, for the failure message."""
    problems = sorted(problems, key=lambda p: (p.split(":")[0], int(re.match(r"[^:]*:(\d+)", p)[1])))
    return f"{len(problems)} layout violation(s):\n" + "\n".join(problems)


def test_every_module_is_listed_exactly_once():
    problems = check_listing(REPO)
    assert not problems, _listing(problems)


def test_imports_follow_the_layers():
    problems = check_imports(REPO)
    assert not problems, _listing(problems)


def test_no_private_name_is_used_across_modules():
    problems = check_private_names(REPO)
    assert not problems, _listing(problems)


def test_modules_are_at_most_350_lines():
    problems = check_length(REPO)
    assert not problems, _listing(problems)


def test_no_block_of_code_lines_is_repeated():
    problems = check_duplicates(REPO)
    assert not problems, _listing(problems)


def test_course_map_names_things_that_exist():
    problems = check_course_map(REPO)
    assert not problems, _listing(problems)


# ---------------------------------------------------------------- the checkers, on tiny packages

def _write(root: pathlib.Path, files: dict[str, str]) -> pathlib.Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return root


_INIT = ('COURSE = ("files", "model", "training")\n'
         'MACHINERY = ("machinery.device", "machinery.web")\n'
         'ALIASES = ("checkpoint",)\n')
_CLEAN = {
    "minillm/__init__.py": _INIT,
    "minillm/files.py": "def read(path):\n    return path\n",
    "minillm/model.py": "from minillm.files import read\nfrom . import files\n\n\ndef build():\n"
                        "    return read(files.read(1))\n",
    "minillm/training.py": "import minillm.model as m\n\n\ndef fit():\n    from .files import read\n"
                           "    return m.build(), read(2)\n",
    "minillm/machinery/__init__.py": "",
    "minillm/machinery/device.py": "from minillm import model\n\n\ndef pick():\n    return model.build()\n",
    "minillm/machinery/web.py": "from ..training import fit\nfrom .device import pick\nfrom . import device\n"
                                "\n\ndef serve():\n    return fit(), pick(), device.__name__\n",
    "minillm/checkpoint.py": "from minillm.machinery.device import *  # noqa: F403\n",
}


def test_self_listing(tmp_path):
    assert check_listing(_write(tmp_path, _CLEAN)) == []
    _write(tmp_path, {"minillm/extra.py": "x = 1\n",
                      "minillm/__init__.py": _INIT.replace('web")', 'web", "model", "gone")')})
    problems = check_listing(tmp_path)
    assert len(problems) == 3, problems
    assert any("minillm/extra.py:1:" in p and "'extra' is in none" in p for p in problems)
    assert any("'model' is listed in COURSE and again in MACHINERY" in p for p in problems)
    assert any("no minillm/gone.py" in p for p in problems)
    (tmp_path / "minillm/__init__.py").write_text("X = 1\n")
    assert any("COURSE is not defined" in p for p in check_listing(tmp_path))


def test_self_imports(tmp_path):
    assert check_imports(_write(tmp_path, _CLEAN)) == []
    _write(tmp_path, {
        "minillm/files.py": "def read(path):\n    from . import model  # forward, inside a function\n"
                            "    return path\n",
        "minillm/model.py": "from minillm.machinery import device\nfrom minillm import checkpoint\n",
        "minillm/training.py": "import minillm.machinery.web\nfrom minillm import COURSE\n",
        "minillm/machinery/device.py": "from .web import serve\nfrom .. import checkpoint\n",
        "minillm/checkpoint.py": "from minillm.files import read\n",
        "minillm/__init__.py": _INIT + "from .model import build\n",
    })
    problems = check_imports(tmp_path)
    expected = [
        ("minillm/files.py:2:", "does not come before 'files' in COURSE"),
        ("minillm/model.py:1:", "the course never imports the machinery"),
        ("minillm/model.py:2:", "never imports an alias"),
        ("minillm/training.py:1:", "the course never imports the machinery"),
        ("minillm/training.py:2:", "the package root"),
        ("minillm/machinery/device.py:1:", "'machinery.web' does not come before 'machinery.device'"),
        ("minillm/machinery/device.py:2:", "is an alias"),
        ("minillm/checkpoint.py:1:", "an alias only re-exports a machinery module"),
        ("minillm/__init__.py:4:", "must import none of them"),
    ]
    for where, why in expected:
        assert any(p.startswith(where) and why in p for p in problems), (where, why, problems)
    assert len(problems) == len(expected), problems


def test_self_private_names(tmp_path):
    assert check_private_names(_write(tmp_path, _CLEAN)) == []
    _write(tmp_path, {
        "minillm/files.py": "def _hidden():\n    return 1\n\n\nclass Reader:\n    def _x(self):\n"
                            "        return self._y\n",
        "minillm/model.py": "from minillm.files import _hidden\nfrom minillm import files as f\n"
                            "import minillm.files\n\n\ndef build(obj):\n    from .files import Reader\n"
                            "    a = f._hidden() + minillm.files._hidden()\n    b = Reader._x\n"
                            "    return a, b, f.__name__, obj._fine, Reader().__dict__\n",
    })
    problems = check_private_names(tmp_path)
    where = sorted(p.split(": [")[0] for p in problems)
    assert where == ["minillm/model.py:1", "minillm/model.py:8", "minillm/model.py:8", "minillm/model.py:9"], problems
    assert "imports _hidden from minillm.files" in problems[0]
    assert any("f._hidden" in p for p in problems) and any("minillm.files._hidden" in p for p in problems)


def test_self_length(tmp_path):
    assert check_length(_write(tmp_path, _CLEAN)) == []
    _write(tmp_path, {"minillm/model.py": "x = 1\n" * (MAX_LINES + 1)})
    assert check_length(tmp_path) == [f"minillm/model.py:{MAX_LINES + 1}: [rule 4: at most {MAX_LINES} lines] "
                                      f"{MAX_LINES + 1} lines; split it by concept"]
    _write(tmp_path, {"minillm/model.py": "x = 1\n" * MAX_LINES})
    assert check_length(tmp_path) == []


_BLOCK = '''
    def {f}({a}, {b}):
        """Docstrings, comments and blank lines do not count."""
        {c} = {a}.view({b}, -1)  # a comment

        {d} = {c}.softmax(dim=-1)
        if {d}.isnan().any():
            raise ValueError("{msg}")
        {e} = ({d} * {c}).sum(dim=1)
        return {e} / {b}
'''


def test_self_duplicates(tmp_path):
    one = textwrap.dedent(_BLOCK.format(f="score", a="x", b="n", c="flat", d="probs", e="total", msg="NaN"))
    renamed = textwrap.dedent(_BLOCK.format(f="rate", a="logits", b="k", c="rows", d="p", e="mass", msg="bad"))
    clean = {"minillm/a.py": one, "minillm/b.py": "def other(x):\n    return x + 1\n"}
    assert check_duplicates(_write(tmp_path, clean)) == []
    # The same shape with other names, in another file: found, both places named.
    _write(tmp_path, {"minillm/b.py": "import torch\n\n" + renamed})
    problems = check_duplicates(tmp_path)
    assert problems == ["minillm/a.py:2-10: [rule 5: no repeated block of 6 code lines] the same 7 code lines "
                        "(up to names and literals) as minillm/b.py:4-12; write it once and call it"], problems
    # Twice in one file, far apart: found; one line changed in shape: not found.
    _write(tmp_path, {"minillm/b.py": "", "minillm/a.py": one + "\n\nY = 2\n" + renamed})
    assert len(check_duplicates(tmp_path)) == 1
    _write(tmp_path, {"minillm/a.py": one + renamed.replace(".sum(dim=1)", ".sum(1).abs()")})
    assert check_duplicates(tmp_path) == []
    # Two dataclasses with fields of the same types, and the tail of one function before the head of the next,
    # are not copies.
    fields = "".join(f"    f{i}: int = {i}  # why\n" for i in range(8))
    tail = "    x = y.f(z)\n    z += 1\n    x = y.f(z)\n    z += 2\n"
    _write(tmp_path, {"minillm/a.py": f"class A:\n{fields}\n\ndef g(y, z):\n{tail}\n\ndef h(y, z):\n{tail}",
                      "minillm/b.py": f"class B:\n{fields}\n\ndef k(y, z):\n{tail}\n\ndef m(y, z):\n{tail}"})
    assert check_duplicates(tmp_path) == []
    # Lines that are alike in every program (items of a call, closing brackets, return x) are not code lines.
    items = "f(\n" + "".join(f"    a{i}=b{i},\n" for i in range(8)) + ")\nreturn x\n"
    _write(tmp_path, {"minillm/a.py": "def g():\n" + textwrap.indent(items, "    ")
                      + "\n\ndef h():\n" + textwrap.indent(items, "    ")})
    assert check_duplicates(tmp_path) == []


_README = '''
    ## Course map
    <!-- course-map:one -->
    | concept | implementation | test | reference |
    | --- | --- | --- | --- |
    | a | `minillm/model.py:Net`, `build` | `test_model.py::test_net`, `::test_build` | Someone 2020 |
    | b | `model.py:Net.forward`, `_scale`, `files.py` docstring, `read` | `test_build` | |
    | c | `model.py` init, `machinery/web.py:serve`, `static/app.js:draw` | `test_model.py`, `test_net` | |
    | d | all of the above | — (printed figure) | |
    <!-- /course-map:one -->
    <!-- course-map:two -->
    | Concept | Where | Test | Reference |
    |---|---|---|---|
    | e | `model.py:Net.size`, `LIMIT` | `test_model.py::test_net` (hypothesis) | |
    <!-- /course-map:two -->
'''


def test_self_course_map(tmp_path):
    files = dict(_CLEAN)
    files["minillm/model.py"] = ("LIMIT = 3\n\n\nclass Base:\n    def forward(self):\n        self.size = 1\n\n\n"
                                 "class Net(Base):\n    def _scale(self):\n        pass\n\n\ndef build():\n"
                                 "    return Net()\n")
    files["minillm/static/app.js"] = "function draw(x) { return x; }\n"
    files["tests/test_model.py"] = "def test_net():\n    pass\n\n\ndef test_build():\n    pass\n"
    files["README.md"] = _README
    assert check_course_map(_write(tmp_path, files)) == []
    broken = _README
    for old, new in [("`build` |", "`built` |"), ("::test_build", "::test_buildx"), ("`read`", "`Reader`"),
                     ("Net.forward", "Net.backward"), ("app.js:draw", "app.js:paint"),
                     ("`test_build`", "`test_missing`"), ("web.py:serve", "wbe.py:serve"), ("| Test |", "| Tests |")]:
        assert old in broken
        broken = broken.replace(old, new)
    _write(tmp_path, {"README.md": broken})
    problems = check_course_map(tmp_path)
    expected = [
        ("README.md:6:", "built is not defined at module level in minillm/model.py"),
        ("README.md:6:", "tests/test_model.py has no test function test_buildx"),
        ("README.md:7:", "class Net in minillm/model.py has no backward"),
        ("README.md:7:", "Reader is not defined at module level in minillm/files.py"),
        ("README.md:7:", "no test function test_missing in tests/*.py"),
        ("README.md:8:", "there is no minillm/machinery/wbe.py"),
        ("README.md:8:", "paint is not defined in minillm/static/app.js"),
        ("README.md:12:", "expected concept | implementation | test | reference"),
    ]
    for where, why in expected:
        assert any(p.startswith(where) and why in p for p in problems), (where, why, problems)
    assert len(problems) == len(expected), problems
    _write(tmp_path, {"README.md": "# nothing\n"})
    assert check_course_map(tmp_path) == ["README.md:1: [rule 6: the course map resolves] no "
                                          "<!-- course-map:NAME --> section found"]
