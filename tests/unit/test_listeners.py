"""Connection admission at accept (synch.listeners): plain bookkeeping, no sockets."""

from __future__ import annotations

import logging

import pytest

from synch.listeners import CLIENT_LIMIT, FULL, NOT_ALLOWED, ConnectionGate, RejectLog


def test_gate_admits_up_to_the_per_client_cap_then_up_to_capacity() -> None:
    gate = ConnectionGate(capacity=3, per_client=2)
    assert [gate.admit("10.0.0.1") for _ in range(3)] == [None, None, CLIENT_LIMIT]
    assert gate.admit("10.0.0.2") is None
    assert gate.admit("10.0.0.3") == FULL
    assert gate.active == 3


def test_gate_release_frees_the_slot_and_the_clients_share() -> None:
    gate = ConnectionGate(capacity=2, per_client=1)
    assert gate.admit("a") is None and gate.admit("b") is None
    assert gate.admit("c") == FULL
    gate.release("a")
    assert gate.held_by("a") == 0 and gate.active == 1
    assert gate.admit("c") is None
    assert gate.admit("c") == CLIENT_LIMIT


def test_gate_refuses_clients_outside_the_allow_list_before_counting() -> None:
    gate = ConnectionGate(capacity=1, per_client=1, allows=lambda host: host == "ok")
    for _ in range(5):
        assert gate.admit("stranger") == NOT_ALLOWED
    assert gate.active == 0
    assert gate.admit("ok") is None


def test_gate_release_of_an_unknown_client_changes_nothing() -> None:
    gate = ConnectionGate(capacity=1, per_client=1)
    gate.release("never-admitted")
    assert gate.active == 0
    assert gate.admit("x") is None


def test_gate_table_holds_only_clients_with_open_connections() -> None:
    gate = ConnectionGate(capacity=10_000, per_client=1)
    for n in range(5000):
        assert gate.admit(f"10.0.{n // 256}.{n % 256}") is None
    for n in range(5000):
        gate.release(f"10.0.{n // 256}.{n % 256}")
    assert gate.active == 0 and not gate._open


@pytest.mark.parametrize("capacity, per_client", [(0, 1), (1, 0)])
def test_gate_needs_room_for_one(capacity: int, per_client: int) -> None:
    with pytest.raises(ValueError):
        ConnectionGate(capacity, per_client)


def test_reject_log_warns_once_per_period_with_the_sum(caplog: pytest.LogCaptureFixture) -> None:
    reject_log = RejectLog("DNS TCP", every=60)
    with caplog.at_level(logging.WARNING, logger="synch.listeners"):
        reject_log.rejected(FULL, now=100.0)
        for n in range(50):
            reject_log.rejected(NOT_ALLOWED, now=101.0 + n)
        reject_log.rejected(FULL, now=161.0)
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "DNS TCP: connections closed at accept (1 full)",
        "DNS TCP: connections closed at accept (1 full, 50 not_allowed)",
    ]
