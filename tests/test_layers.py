"""Data flows one way: audio -> image -> model -> prediction, and so do the imports.

    preprocess   imports nothing of train or bench
    train        may import preprocess, never bench
    bench        may import both; nothing imports bench

Every import counts, wherever it is written (inside a function, under `if TYPE_CHECKING:`): a cycle
hidden in a function is still a cycle. The test reads the source (ast), it imports nothing.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("preprocess", "train", "bench")
MAY_IMPORT = {"preprocess": {"preprocess"}, "train": {"preprocess", "train"},
              "bench": {"preprocess", "train", "bench"}}
MAX_LINES = 450  # a file does one job you can name


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).glob("*.py")):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            found[name] = path
    return found


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules `name` imports (`from train import detect` -> train.detect)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the package
                base = name.split(".")[0] if path.stem != "__init__" else name
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            targets = [f"{module}.{alias.name}" for alias in node.names] + [module]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name and target.split(".")[0] in PACKAGES and target not in PACKAGES:
                out.add(target)  # a package's __init__ (run by every import of it) is checked on its own
    return out


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imports_of(name, path, known) for name, path in found.items()}


def test_no_arrow_points_back_up_the_layers():
    wrong = sorted(f"{a} imports {b}" for a, targets in graph().items() for b in targets
                   if b.split(".")[0] not in MAY_IMPORT[a.split(".")[0]])
    assert not wrong, "\n".join(wrong)


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (as a list of modules, first == last) or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_no_import_cycles():
    cycle = find_cycle(graph())
    assert cycle is None, " -> ".join(cycle)


def test_the_checks_see_a_planted_cycle_and_an_arrow_up(tmp_path):
    assert find_cycle({"train.a": {"train.b"}, "train.b": {"train.c"}, "train.c": {"train.a"}}) == [
        "train.a", "train.b", "train.c", "train.a"]
    assert find_cycle({"train.a": {"train.b"}, "train.b": set()}) is None
    path = tmp_path / "x.py"
    path.write_text("def f():\n    from train.suspects import label_check\n"
                    "if TYPE_CHECKING:\n    from train import detect\n")
    assert imports_of("preprocess.x", path, {"train.suspects", "train.detect", "train"}) == {
        "train.suspects", "train.detect"}


def test_no_benchmark_module_inside_the_packages():
    inside = [name for name in modules() if name.split(".")[0] in ("preprocess", "train")
              and name.rpartition(".")[2] in ("bench", "scale", "render_ab", "render_stages", "hostile_bench")]
    assert not inside


@pytest.mark.parametrize("package", ("preprocess", "train"))
def test_files_stay_small(package):
    long = {p.name: n for p in sorted((REPO / package).glob("*.py"))
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"over {MAX_LINES} lines: {long}"
