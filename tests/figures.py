"""Figures a test run prints (measured, never asserted): kept in a file and shown after the
run's dots, past pytest's output capture, so that they show without -s."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest


def report_figures(
    request: pytest.FixtureRequest,
    lines: list[str],
    *,
    title: str,
    cache_dir: str,
    filename: str,
    fallback_dir: Path | None = None,
) -> Path | None:
    """Write `lines` to `filename` in pytest's cache dir `cache_dir` (or in `fallback_dir`
    under -p no:cacheprovider; nowhere if None) and print them under `title`; the file."""
    if not lines:
        return None
    cache = getattr(request.config, "cache", None)  # absent under -p no:cacheprovider
    folder = cache.mkdir(cache_dir) if cache is not None else fallback_dir
    out = None
    if folder is not None:
        out = folder / filename
        out.write_text("\n".join(lines) + "\n")
    plugins = request.config.pluginmanager
    reporter = plugins.get_plugin("terminalreporter")
    capture = plugins.get_plugin("capturemanager")
    if reporter is None:
        return out
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        reporter.write_line("")
        reporter.write_line(f"{title} ({out}):" if out is not None else f"{title}:")
        for line in lines:
            reporter.write_line(f"  {line}")
    return out
