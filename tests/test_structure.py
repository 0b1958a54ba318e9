"""The layout stays readable: no import circles, no file over 400 lines, no function over 80
lines, the shipped packages never import the tests, and the serving path (the worker's modules)
never imports torch or the offline package."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("stream_app", "models")
SOURCES = sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Project modules imported anywhere in the file (function-level imports included)."""
    names = {module_name(p) for p in SOURCES}
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            cands = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            cands = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        found |= {c for c in cands if c in names}
    return found - {module_name(path)}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (c := visit(m)):
                return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (c := visit(n)):
            return c
    return None


def test_no_import_cycles():
    graph = {module_name(p): {i for i in imports_of(p) if not i.startswith(module_name(p) + ".")} for p in SOURCES}
    graph = {k: {i for i in v if i not in PACKAGES} for k, v in graph.items()}
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_files_and_functions_stay_small(path):
    lines = path.read_text().count("\n")
    assert lines <= 400, f"{path.name} has {lines} lines"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = node.end_lineno - node.lineno + 1
            assert n <= 80, f"{path.name}:{node.lineno} {node.name}() has {n} lines"


def test_shipped_code_never_imports_the_tests():
    """What ships (stream_app, models) stands on its own: test helpers live in tests/support."""
    bad = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                mods = [node.module]
            else:
                continue
            bad += [f"{path.relative_to(ROOT)}:{node.lineno} imports {m}" for m in mods if m.split(".")[0] == "tests"]
    assert not bad, "\n".join(bad)


def test_serving_path_imports_neither_torch_nor_offline_code():
    code = ("import sys, stream_app.app, stream_app.worker, stream_app.processor, models.engine; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'torch' or m.startswith('models.offline')); "
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"serving path imports {out.stdout.strip()}"
