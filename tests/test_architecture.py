"""The layout keeps its own rules: no import circles, no arrow against the order of boxes,
only public names of `demoset.format` used outside it, and a code map that lists every module.

The order of boxes and the code map are read from docs/architecture.md, so the document
and the code cannot drift apart. The import graph is read with `ast` from the source (no
import is executed). Every `import` counts, at module level and inside functions alike: a
function-level import is still a dependency, only a later one, and a circle through it is
still a circle a reader has to untangle. An import names its target module (`from pkg
import mod` is an arrow to `pkg.mod` when that is a module, else to `pkg`); the parent
packages Python initialises on the way are not counted, or every package would form a
circle with its own modules.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PACKAGE = SRC / "demoset"
ARCHITECTURE = ROOT / "docs" / "architecture.md"


# ---------------------------------------------------------------------------- reading
def _modules() -> dict[str, Path]:
    """Dotted name -> file of every module of src/demoset (packages by their __init__)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]):
    """(target module, line, the ImportFrom node or None) for each demoset import of a module."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "demoset" or alias.name.startswith("demoset."):
                    yield alias.name, node.lineno, None
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            if not (base == "demoset" or base.startswith("demoset.")):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                yield (sub if sub in modules else base), node.lineno, node


def _graph() -> dict[str, dict[str, int]]:
    modules = _modules()
    graph: dict[str, dict[str, int]] = {}
    for name, path in modules.items():
        edges = graph.setdefault(name, {})
        for target, line, _ in _imports(name, path, modules):
            if target != name:
                edges.setdefault(target, line)
    return graph


def _box_order() -> dict[str, int]:
    """Box name prefix -> rank, from the numbered list under "## Order of boxes"."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    section = text.split("## Order of boxes", 1)[1].split("\n## ", 1)[0]
    ranks: dict[str, int] = {}
    for rank, match in enumerate(re.finditer(r"^\d+\. \*\*[^*]+\*\*: (.+)$", section, re.M)):
        for item in re.findall(r"`([\w.]+)`", match.group(1)):
            ranks[item] = rank
    assert ranks, "docs/architecture.md has no numbered list under '## Order of boxes'"
    return ranks


def _box_of(module: str, ranks: dict[str, int]) -> int | None:
    """Rank of the longest listed prefix of a module (`demoset.format.h5io` -> `format`)."""
    parts = module.split(".")[1:] or ["demoset"]
    for n in range(len(parts), 0, -1):
        key = ".".join(parts[:n])
        if key in ranks:
            return ranks[key]
    return None


# ---------------------------------------------------------------------------- the rules
def test_no_import_circles():
    graph = _graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    described = [
        " <-> ".join(c)
        + ": "
        + "; ".join(f"{a} imports {b} (line {graph[a][b]})" for a in c for b in c if b in graph[a])
        for c in circles
    ]
    assert not circles, "import circles in src/demoset:\n" + "\n".join(described)


def test_imports_follow_the_order_of_boxes():
    ranks = _box_order()
    graph = _graph()
    unplaced = sorted(m for m in graph if _box_of(m, ranks) is None)
    assert not unplaced, (
        f"modules in no box of docs/architecture.md '## Order of boxes': {unplaced}"
    )
    upward = [
        f"{a} (line {line}) imports {b}: a box may import only from boxes above it"
        for a, targets in sorted(graph.items())
        for b, line in targets.items()
        if b in graph and _box_of(b, ranks) > _box_of(a, ranks)
    ]
    assert not upward, "imports against the order of boxes:\n" + "\n".join(upward)


def _format_public_names() -> set[str]:
    tree = ast.parse((PACKAGE / "format" / "__init__.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            return set(ast.literal_eval(node.value))
    raise AssertionError("demoset/format/__init__.py has no __all__")


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def test_only_public_names_cross_modules():
    """Outside format/ only names of `demoset.format.__all__`; nowhere a `_private` name."""
    public = _format_public_names()
    modules = _modules()
    wrong = []
    for name, path in modules.items():
        inside_format = name == "demoset.format" or name.startswith("demoset.format.")
        for target, line, node in _imports(name, path, modules):
            where = f"{path.relative_to(SRC)}:{line}"
            if node is not None:
                private = [a.name for a in node.names if _private(a.name)]
                if private:
                    wrong.append(f"{where} imports private {private} from {node.module}")
            if inside_format:
                continue
            if target.startswith("demoset.format.") and (
                node is None or node.module != "demoset.format"
            ):
                wrong.append(f"{where} reaches into {target}; import from demoset.format")
            elif node is not None and node.module == "demoset.format":
                hidden = [a.name for a in node.names if a.name not in public]
                if hidden:
                    wrong.append(f"{where} imports {hidden}, not in demoset.format.__all__")
    assert not wrong, "\n".join(wrong)


def test_format_all_names_exist():
    import demoset.format

    missing = [n for n in demoset.format.__all__ if not hasattr(demoset.format, n)]
    assert not missing


# ---------------------------------------------------------------------------- the code map
def _code_map() -> list[str]:
    """Module files listed in the code map table of docs/architecture.md."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    section = text.split("## Code map", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([\w/]+\.py)` \|", section, re.M)


def test_code_map_lists_every_module():
    listed = _code_map()
    on_disk = sorted(str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py"))
    doubles = sorted({m for m in listed if listed.count(m) > 1})
    missing = [m for m in on_disk if m not in listed]
    gone = [m for m in listed if m not in on_disk]
    problems = []
    if missing:
        problems.append(
            "modules missing from the code map in docs/architecture.md (add a line "
            "'| `path.py` | what it does |' for each): " + ", ".join(missing)
        )
    if gone:
        problems.append("code map lines for modules that no longer exist: " + ", ".join(gone))
    if doubles:
        problems.append("listed twice: " + ", ".join(doubles))
    assert not problems, "\n".join(problems)
