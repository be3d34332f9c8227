"""The import rule of docs/ARCHITECTURE.md, read from the source with ``ast`` (no module is imported).

Every import counts: at the top of a module, inside a function, and under ``if TYPE_CHECKING``. The
rule, by package (``core`` is ``lofi_live``'s own modules: ``errors``, ``files``, ``__init__``):

    midi -> core;  tokens -> midi;  timing -> tokens, midi;  model -> tokens;  recording -> tokens, midi;
    live -> tokens, midi, timing, model, recording;  commands -> anything;  nothing imports commands
    (but the ``lofi-live`` entry point, by name);  training -> tokens, midi, model, core, the cli's
    parser;  the runtime never imports training or TensorFlow when it is imported (a command that
    measures against the trainer's Keras model imports them inside the function that does).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("tokens", "midi", "timing", "model", "live", "recording", "commands")
#: package -> the packages it may import (itself always).
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "cli": {"core"},
    "midi": {"core"},
    "tokens": {"core", "midi"},
    "timing": {"core", "midi", "tokens"},
    "model": {"core", "tokens"},
    "recording": {"core", "midi", "tokens"},
    "live": {"core", "midi", "tokens", "timing", "model", "recording"},
    "commands": {"core", "midi", "tokens", "timing", "model", "recording", "live"},
    "training": {"core", "cli", "midi", "tokens", "model"},
}
#: Imports the runtime may never make: its install has neither.
RUNTIME_NEVER = ("tensorflow", "keras", "tf2onnx", "training")
LONGEST_FILE = 450
TOP_ENTRIES = 12


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for top in ("lofi_live", "training") for path in sorted((ROOT / top).rglob("*.py"))}


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """Every module ``path`` imports (``from pkg import module`` names the module when it is one)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.add(full if full in known else node.module)
    return found


def package(module: str) -> str:
    parts = module.split(".")
    if parts[0] == "training":
        return "training"
    if len(parts) > 1 and parts[1] in PACKAGES:
        return parts[1]
    return "cli" if module == "lofi_live.cli" else "core"


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: {each for each in imports(path, known) if each in known} for name, path in known.items()}


def test_no_import_cycle(graph):
    """Tarjan's strongly connected components of the module graph: none holds two modules."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for other in graph[module]:
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = []
            while True:
                other = stack.pop()
                component.append(other)
                if other == module:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    assert cycles == []


def test_every_import_follows_the_rule(graph):
    known = modules()
    broken = [f"{module} imports {other}" for module, others in sorted(graph.items()) for other in sorted(others)
              if package(other) != package(module) and package(other) not in ALLOWED[package(module)]
              and not (package(module) == "commands" and package(other) == "training"
                       and other not in top_level_imports(known[module]))]
    assert broken == []


def test_the_rule_itself_has_no_cycle():
    order: list[str] = []
    while len(order) < len(ALLOWED):
        ready = [name for name, needs in ALLOWED.items() if name not in order and needs <= set(order)]
        assert ready, f"the packages {sorted(set(ALLOWED) - set(order))} depend on each other"
        order += sorted(ready)


def top_level_imports(path: Path) -> set[str]:
    """What a module imports when it is imported (not inside its functions)."""
    found: set[str] = set()
    pending = list(ast.parse(path.read_text(), str(path)).body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            pending.extend(ast.iter_child_nodes(node))
        elif isinstance(node, ast.ClassDef):
            pending.extend(each for each in node.body if not isinstance(each, (ast.FunctionDef, ast.AsyncFunctionDef)))
    return found


def test_the_runtime_never_imports_training_or_tensorflow():
    """``lofi_live`` installs without TensorFlow and the trainer: no module of it imports them when it is
    imported; a command that measures against the trainer's Keras model (``bench``) imports them inside the
    function that does, and only a command may."""
    known = modules()
    runtime = {name: path for name, path in known.items() if name.startswith("lofi_live")}
    eager = [f"{name} imports {each}" for name, path in runtime.items()
             for each in top_level_imports(path) if each.split(".")[0] in RUNTIME_NEVER]
    lazy = [f"{name} imports {each}" for name, path in runtime.items() if package(name) != "commands"
            for each in imports(path, known) if each.split(".")[0] in RUNTIME_NEVER]
    assert eager == [] and lazy == []


def test_the_rule_catches_a_break(tmp_path):
    """The reader sees an import inside a function and under TYPE_CHECKING, and the rule refuses one."""
    source = tmp_path / "probe.py"
    source.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from lofi_live.live.engine import Engine\n"
                      "def f():\n    import lofi_live.commands.run\n")
    known = modules()
    found = imports(source, known)
    assert {"lofi_live.live.engine", "lofi_live.commands.run"} <= found
    assert "commands" not in ALLOWED["live"] and "live" not in ALLOWED["tokens"]


def test_no_file_is_over_450_lines():
    long = [f"{path.relative_to(ROOT)}: {count} lines"
            for top in ("lofi_live", "training", "tests", "benchmarks") for path in sorted((ROOT / top).rglob("*.py"))
            if (count := len(path.read_text().splitlines())) > LONGEST_FILE]
    assert long == []


def test_lofi_live_has_at_most_12_entries_at_its_top():
    entries = sorted(p.name for p in (ROOT / "lofi_live").iterdir() if p.name != "__pycache__")
    assert len(entries) <= TOP_ENTRIES, entries
    assert {f"{name}" for name in PACKAGES} <= set(entries)
