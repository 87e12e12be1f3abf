"""A throw-away Debian `prometheus` on 127.0.0.1, for the tests and grafana/render_preview.py."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lab.wait import wait_until

PROMETHEUS = "/usr/bin/prometheus"


class PrometheusError(RuntimeError):
    """Prometheus did not start, or answered a query with an error."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def scrape_config(
    target: str,
    instance: str,
    rule_files: Sequence[Path] = (),
    interval: str = "1s",
    metrics_path: str = "/metrics",
) -> str:
    """prometheus.yml scraping one synch as job "synch", its `instance` label set to `instance`."""
    config = {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [
            {
                "job_name": "synch",
                "metrics_path": metrics_path,
                "static_configs": [{"targets": [target], "labels": {"instance": instance}}],
            }
        ],
    }
    return json.dumps(config, indent=2)  # JSON is YAML


class Prometheus:
    """HTTP API client of a running Prometheus."""

    def __init__(self, url: str, process: subprocess.Popen[bytes], log: Path):
        self.url = url
        self.process = process
        self.log = log
        self.started_at = time.time()  # unix time; no sample of its own is older

    def get(self, path: str, **params: str) -> Any:
        query = urllib.parse.urlencode(params)
        with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=10) as resp:
            body = json.load(resp)
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {body}")
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """Instant query; the result vector (or a scalar as a one-element list)."""
        params = {"query": expr} if at is None else {"query": expr, "time": str(at)}
        try:
            data = self.get("/api/v1/query", **params)
        except urllib.error.HTTPError as exc:  # 400 on a parse error: keep Prometheus' words
            raise PrometheusError(f"{expr!r}: {exc.read().decode(errors='replace')}") from exc
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        try:
            data = self.get(
                "/api/v1/query_range", query=expr, start=str(start), end=str(end), step=str(step)
            )
        except urllib.error.HTTPError as exc:
            raise PrometheusError(f"{expr!r}: {exc.read().decode(errors='replace')}") from exc
        result: list[dict[str, Any]] = data["result"]
        return result

    def exited_or_ready(self) -> bool:
        return self.process.poll() is not None or self.ready()

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False


@contextmanager
def running_prometheus(
    config_text: str, workdir: Path, timeout: float = 60.0
) -> Iterator[Prometheus]:
    """Start prometheus with `config_text` and storage in `workdir`; stop it on exit.

    Existing blocks in workdir/data (e.g. backfilled with promtool) are served too.
    """
    if shutil.which(PROMETHEUS) is None:
        raise PrometheusError(f"{PROMETHEUS} not found: apt-get install prometheus")
    config = workdir / "prometheus.yml"
    config.write_text(config_text)
    log = workdir / "prometheus.log"
    for _attempt in range(3):  # the free port may be taken between probe and bind
        port = free_port()
        with log.open("wb") as out:
            process = subprocess.Popen(
                [
                    PROMETHEUS,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--storage.tsdb.retention.time=10y",  # keep backfilled history
                    "--log.level=warn",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        prom = Prometheus(f"http://127.0.0.1:{port}", process, log)
        try:
            wait_until(
                prom.exited_or_ready,
                timeout,
                interval=0.1,
                message=f"prometheus ready on {prom.url}",
            )
        except AssertionError as exc:
            _stop(process)
            raise PrometheusError(f"{exc}: {log.read_text()[-3000:]}") from exc
        if process.poll() is not None:
            if "address already in use" in log.read_text():
                continue
            raise PrometheusError(f"prometheus exited {process.returncode}: {log.read_text()}")
        try:
            yield prom
        finally:
            _stop(process)
        return
    raise PrometheusError("no free port for prometheus after 3 attempts")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
