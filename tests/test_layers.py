"""Imports only go down the package's floors, there is no import cycle, and the repository's text points
at nothing outside it.

Floors, lowest first (a module may import from its own floor or lower ones):

0. ``fedsim.errors``, ``fedsim.plugins`` (objects by import path), ``fedsim.data``, ``fedsim.compress``
1. ``fedsim.models``; ``fedsim.model_file`` (model variables on disk: compress and models only)
2. ``fedsim.algorithms``
3. ``fedsim.privacy``, ``fedsim.metrics``
4. ``fedsim.engine``; ``fedsim.config`` (read by the engine and the entry points only)
5. the entry points: ``fedsim`` itself (``__init__``), ``__main__``, ``driver``, ``cli``, ``sweep``,
   ``bench``, and ``checkpoint`` (it stores the engine's ``RunState``)

Every import counts, at module level or inside a function. ``from fedsim.x import y`` depends on the
module ``fedsim.x.y`` when that is a module, else on ``fedsim.x``.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "fedsim"

FLOORS = {
    "fedsim.errors": 0,
    "fedsim.plugins": 0,
    "fedsim.data": 0,
    "fedsim.compress": 0,
    "fedsim.models": 1,
    "fedsim.model_file": 1,
    "fedsim.algorithms": 2,
    "fedsim.privacy": 3,
    "fedsim.metrics": 3,
    "fedsim.engine": 4,
    "fedsim.config": 4,
    "fedsim": 5,
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def floor(module: str) -> int:
    """The floor of ``module``: that of its longest prefix in ``FLOORS``."""
    return FLOORS[max((p for p in FLOORS if _within(module, p)), key=len)]


def _target(name: str) -> str | None:
    """The fedsim module ``name`` refers to (its longest prefix that is one), or None if external."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in MODULES:
            return ".".join(parts[:end])
    return None


def imports(source: str, module: str) -> set[str]:
    """The fedsim modules that ``source`` (the text of ``module``) imports."""
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(t for n in names if (t := _target(n)) is not None and t != module)
    return found


GRAPH = {m: imports(p.read_text(encoding="utf-8"), m) for m, p in MODULES.items()}


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def upward(graph: dict[str, set[str]]) -> list[str]:
    """Every import of ``graph`` that goes to a higher floor."""
    bad = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            if floor(target) > floor(module):
                bad.append(f"{module} (floor {floor(module)}) imports {target} ({floor(target)})")
    return bad


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as a path ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state and (found := visit(target)):
                return found
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (found := visit(module)):
            return found
    return None


def test_every_module_has_a_floor():
    for module in MODULES:
        floor(module)


def test_no_import_goes_up_a_floor():
    assert upward(GRAPH) == []


def test_no_import_cycle():
    assert cycle(GRAPH) is None


@pytest.mark.parametrize(
    "module, line",
    [
        ("fedsim.compress.lowrank", "from fedsim.models.base import Model"),
        ("fedsim.metrics.evaluate", "from fedsim.engine import round"),
        ("fedsim.data.partition", "import fedsim.config"),
        ("fedsim.algorithms.fedavg", "from ..engine.loop import Experiment"),
    ],
)
def test_an_upward_import_is_caught(module, line):
    source = MODULES[module].read_text(encoding="utf-8") + f"\n\ndef _late():\n    {line}\n"
    assert upward({**GRAPH, module: imports(source, module)})


def test_a_cycle_is_caught():
    graph = {**GRAPH, "fedsim.errors": GRAPH["fedsim.errors"] | {"fedsim.data.datasets"}}
    assert cycle(graph)[0] == cycle(graph)[-1]


OUTSIDE = ("../shared", "shared/specs", "CONTRACT.md", "EXPERIMENTS.md", "BENCHMARKS.md", "DATA.md")


def test_no_text_points_outside_the_repository():
    files = [ROOT / "README.md"]
    for folder in ("fedsim", "configs", "notebooks"):
        files += [p for p in sorted((ROOT / folder).rglob("*")) if p.is_file()]
    hits = []
    for path in files:
        if path.suffix not in {".py", ".md", ".ipynb", ".txt", ".toml", ".json"}:
            continue
        name, text = path.relative_to(ROOT).as_posix(), path.read_text(encoding="utf-8")
        hits += [f"{name}: {needle}" for needle in OUTSIDE if needle in text]
    assert hits == []
