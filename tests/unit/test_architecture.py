"""The layering of mpk, read from the source: no import cycles, no layer importing a higher one.

Every module under mpk/, packager/ and runners/ is parsed (``ast``, nothing is imported) and each
``import`` becomes an edge, wherever it sits: a function-level import is a dependency too; only
``if TYPE_CHECKING:`` blocks, which never run, are left out. ``from pkg import sub`` is an edge to
the module ``pkg.sub`` when that is a module; the parent package's ``__init__`` that Python runs
on the way is not counted (the packages keep their ``__init__`` light for exactly that reason).

The layers, bottom to top (a module may import its own layer and those below):

1. **foundation** (``mpk``): errors, registries, text/YAML I/O, output folders, the metrics, the
   file-format contract, and the Ray connection both halves' ``--ray`` use. Both halves and the apps'
   tests stand on it; it imports neither half.
2. **packager**: model -> artifacts.
3. **runners.base**: leaves every runner module may use: statistics, memory, device facts, the
   environment, devices.yaml's device entries, the budgets parser.
4. **runners.measure**: transports, the virtual device, drivers, the host runner, devices.yaml as a
   whole, the matrix, and the matrix across hosts on Ray (its actors and ``mpk agent``'s node).
5. **runners.judge**: the gate and its reports (``--until-conclusive`` measures through the matrix).
6. **runners.bench**: ``mpk bench`` as a library call (the matrix plus the gate's re-measuring loop).
7. **cli**: the Click commands; ``mpk.cli`` names them by string and imports none.

runners may import packager only where there is no other way: the host runner opens artifacts
through ``packager.runtime`` (the same session classes verification used), so that the runtimes a
number is measured with are the ones the artifact was verified with. Nothing else in runners
imports packager, which is what lets ``pip install mpk`` (no torch) run gate, report and history.
"""

from __future__ import annotations

import ast
import fnmatch
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("mpk", "packager", "runners")

#: (layer, module patterns); the most specific pattern (exact name, then longest glob) places a module
LAYERS: list[tuple[str, list[str]]] = [
    ("foundation", ["mpk", "mpk.errors", "mpk.registry", "mpk.textio", "mpk.yamlio", "mpk.outdir", "mpk.metrics",
                    "mpk.profiling", "mpk.hostcpu", "mpk.runtimes", "mpk.files", "mpk.raycluster", "mpk.contract",
                    "mpk.contract.*"]),
    ("packager", ["packager", "packager.*"]),
    ("runners.base", ["runners", "runners.stats", "runners.memory", "runners.devicefacts", "runners.environment",
                      "runners.devices", "runners.gate.budgets"]),
    ("runners.measure", ["runners.transport", "runners.transport.*", "runners.vdevice", "runners.vdevice.*",
                         "runners.drivers", "runners.drivers.*", "runners.host_runner", "runners.emulator",
                         "runners.config", "runners.compat", "runners.matrix", "runners.ray_matrix",
                         "runners.ray_agent", "runners.apps", "runners.apps.android_build"]),
    ("runners.judge", ["runners.gate", "runners.gate.*", "runners.report", "runners.report.*"]),
    ("runners.bench", ["runners.bench"]),
    ("cli", ["mpk.cli", "mpk.__main__", "packager.cli", "packager.compress.cli", "runners.cli", "runners.gate.cli",
             "runners.vdevice.cli", "runners.vdevice.__main__", "runners.apps.cli", "runners.ray_cli"]),
]  # fmt: skip

#: the only imports of packager from runners (see the module docstring)
RUNNERS_TO_PACKAGER = {("runners.host_runner", "packager.runtime")}


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for f in sorted((ROOT / pkg).rglob("*.py")):
            parts = f.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = f
    return out


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The repo modules ``name`` imports (anywhere in the file except ``if TYPE_CHECKING:`` blocks)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()

    def nearest(mod: str) -> str | None:
        while mod and mod not in known:
            mod = mod.rpartition(".")[0]
        return mod or None

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            for a in node.names:
                found.add(nearest(a.name) or "")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = name.split(".") if is_pkg else name.split(".")[:-1]
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for a in node.names:
                sub = f"{base}.{a.name}"
                found.add(sub if sub in known else (nearest(base) or ""))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {m for m in found if m and m != name}


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(name, path, known) for name, path in mods.items()}


def layer_of(module: str) -> int:
    best: tuple[int, int, int] | None = None  # (exact?, pattern length, layer)
    for i, (_, patterns) in enumerate(LAYERS):
        for p in patterns:
            if p == module or (("*" in p) and fnmatch.fnmatchcase(module, p)):
                key = (int(p == module), len(p), i)
                best = key if best is None or key > best else best
    if best is None:
        raise KeyError(module)
    return best[2]


def cycles(g: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components with more than one module (Tarjan), i.e. every import cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[frozenset[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(g.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(frozenset(comp))

    for v in sorted(g):
        if v not in index:
            strong(v)
    return out


@pytest.fixture(scope="module")
def imports() -> dict[str, set[str]]:
    return graph()


def test_every_module_has_a_layer(imports: dict[str, set[str]]) -> None:
    unplaced = []
    for m in imports:
        try:
            layer_of(m)
        except KeyError:
            unplaced.append(m)
    assert not unplaced, f"place these modules in a layer of LAYERS: {unplaced}"


def test_no_layer_imports_upward(imports: dict[str, set[str]]) -> None:
    upward = [
        f"{m} ({LAYERS[layer_of(m)][0]}) imports {d} ({LAYERS[layer_of(d)][0]})"
        for m, deps in sorted(imports.items())
        for d in sorted(deps)
        if layer_of(d) > layer_of(m)
    ]
    assert not upward, "\n".join(upward)


def test_runners_import_packager_only_where_documented(imports: dict[str, set[str]]) -> None:
    edges = {(m, d) for m, deps in imports.items() if m.startswith("runners") for d in deps if d.startswith("packager")}
    assert edges == RUNNERS_TO_PACKAGER


def test_no_import_cycles(imports: dict[str, set[str]]) -> None:
    found = [sorted(c) for c in cycles(imports)]
    assert not found, f"import cycles: {found}"


def test_the_checks_can_fail(tmp_path: Path) -> None:
    """The graph reader and the cycle finder on planted examples: they must see what is there, and only that."""
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(g) == [frozenset({"a", "b", "c"})]
    assert layer_of("runners.gate.cli") > layer_of("runners.gate") > layer_of("runners.gate.budgets")
    assert layer_of("mpk.contract.results") < layer_of("packager.verify") < layer_of("runners.stats")
    planted = tmp_path / "mod.py"
    planted.write_text(
        "from typing import TYPE_CHECKING\n"
        "from runners import stats\n"
        "if TYPE_CHECKING:\n    from runners.matrix import Bench\n"
        "def f():\n    from .devices import DeviceSpec\n    import mpk.contract.results\n"
    )
    known = {"runners", "runners.stats", "runners.matrix", "runners.devices", "mpk.contract", "mpk.contract.results"}
    assert imports_of("runners.mod", planted, known) == {"runners.stats", "runners.devices", "mpk.contract.results"}
