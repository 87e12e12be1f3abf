"""The shape of the code, checked: no import cycle between synch's packages, and the pure layer
(probe arithmetic, states, config parsing and filtering, DNS answers, the status protocol)
imports neither gevent nor sockets, so it can be tested and reasoned about without a network.
ARCHITECTURE.md describes the layers."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SYNCH = Path(__file__).resolve().parents[2] / "synch"

# The pure layer: plain functions and classes over plain data.
PURE = (
    "synch.probe",
    "synch.budget",
    "synch.registration",
    "synch.states",
    "synch.names",
    "synch.timestamps",
    "synch.jsonc",
    "synch.config",
    "synch.control.protocol",
    "synch.ami",
    "synch.ami.message",
    "synch.ami.actions",
    "synch.ami.framing",
    "synch.sip",
    "synch.sip.message",
    "synch.dns.zone",
    "synch.dns.state",
    "synch.dns.wire",
    "synch.dns.fastpath",
    "synch.dns.resolver",
    "synch.dns.stale",
    "synch.sync.model",
    "synch.sync.getconfig",
    "synch.sync.conftext",
    "synch.sync.filter",
    "synch.sync.plan",
    "synch.sync.render",
    "synch.sync.policy",
    "synch.sync.mirror",
    "synch.sync.outcome",
    "synch.sync.stages",
    "synch.sync.fetch",
    "synch.sync.schedule",
    "synch.dialplan.generate",
    "synch.dialplan.voicemail",
)
# What the pure layer must not reach, even through other modules.
TRANSPORT = ("gevent", "socket", "_socket", "ssl", "asterisk", "selectors", "asyncio")


def module_name(path: Path) -> str:
    parts = path.relative_to(SYNCH.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in SYNCH.rglob("*.py")}


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(name: str, path: Path) -> set[str]:
    """Every module `name` imports when it runs (imports only for type checkers left out)."""
    tree = ast.parse(path.read_text(), str(path))
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
               and _type_checking(node) for n in ast.walk(node)}  # fmt: skip
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def graph() -> dict[str, set[str]]:
    """module → the synch modules importing it runs: those it names, and the packages above
    each of them (importing `a.b.c` runs `a/__init__.py` and `a/b/__init__.py` first)."""
    known = modules()
    edges: dict[str, set[str]] = {}
    for name, path in known.items():
        named = {i for i in imports(name, path) if i in known}
        parents = {".".join(m.split(".")[:n]) for m in {*named, name}
                   for n in range(1, m.count(".") + 1)}  # fmt: skip
        edges[name] = {m for m in named | parents if m in known and m != name}
    return edges


def unit(name: str) -> str:
    """The package (or top-level module) a module belongs to: synch.sync.job → synch.sync."""
    parts = name.split(".")
    return ".".join(parts[:2])


def test_no_import_cycle_between_packages() -> None:
    edges: dict[str, set[str]] = {}
    for name, targets in graph().items():
        for target in targets:
            if unit(target) != unit(name):
                edges.setdefault(unit(name), set()).add(unit(target))
    # Depth-first search for a cycle, reporting the path.
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycle = [*path[path.index(nxt):], nxt] if nxt in path else [node, nxt]
                pytest.fail("import cycle between packages: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for start in sorted(edges):
        if start not in state:
            visit(start, [start])


@pytest.mark.parametrize("pure", PURE)
def test_the_pure_layer_reaches_no_transport(pure: str) -> None:
    known = modules()
    assert pure in known, f"{pure} is gone"
    deps = graph()
    seen: set[str] = set()
    todo = [pure]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        outside = {i.split(".")[0] for i in imports(name, known[name])} & set(TRANSPORT)
        assert not outside, f"{pure} reaches {sorted(outside)} through {name}"
        todo.extend(deps[name])
