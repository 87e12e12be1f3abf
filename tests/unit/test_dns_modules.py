"""How synch.dns is cut: the pure modules stay pure, and the answer vocabulary is one."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from synch.dns.resolver import Answer
from synch.metrics import DNS_ANSWERS, Metrics

DNS = Path(__file__).resolve().parents[2] / "synch" / "dns"
PURE = ["acl", "fastpath", "resolver", "service", "stale", "state", "wire", "zone"]
IMPURE = {"gevent", "socket", "_socket", "selectors", "select", "threading"}


def imported(module: str) -> set[str]:
    tree = ast.parse((DNS / f"{module}.py").read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_import_no_sockets_and_no_greenlets(module: str) -> None:
    assert not imported(module) & IMPURE


def test_metrics_count_every_answer_kind_by_its_one_name() -> None:
    assert [str(answer) for answer in DNS_ANSWERS] == [answer.value for answer in Answer]
    metrics = Metrics()
    for answer in Answer:
        sample = metrics.registry.get_sample_value(
            "synch_dns_queries_total", {"answer": answer.value}
        )
        assert sample == 0.0, answer
