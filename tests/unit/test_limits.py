"""Pool sizes from the file-descriptor limit (synch.limits): arithmetic only."""

from __future__ import annotations

import pytest

from synch.limits import FULL_SIZE, SMALLEST, available_for_pools, plan


@pytest.mark.parametrize("fd_limit", [256, 512, 1024, 2048, 4096, 65536, 1 << 20])
def test_pools_fit_in_the_descriptor_limit_with_headroom(fd_limit: int) -> None:
    budget = plan(fd_limit)
    assert budget.descriptors <= available_for_pools(fd_limit) < fd_limit
    assert fd_limit - budget.descriptors >= 64 + fd_limit // 8


def test_a_generous_limit_gives_every_pool_its_full_size() -> None:
    assert plan(1 << 20) == FULL_SIZE
    assert plan(524288) == FULL_SIZE


def test_a_tight_limit_shrinks_every_pool_but_not_below_its_smallest_useful_size() -> None:
    budget = plan(1024)
    for name in ("status", "metrics", "dns_tcp", "dns_forward"):
        assert getattr(SMALLEST, name) <= getattr(budget, name) <= getattr(FULL_SIZE, name)
    assert budget.dns_tcp < FULL_SIZE.dns_tcp and budget.status < FULL_SIZE.status
    tiny = plan(32)
    assert tiny == SMALLEST  # too low to fit even these: the daemon logs an error
