"""Tests of the Grafana dashboard and the Prometheus rules in grafana/."""

from tests.observability.deps import need

# Every module here reads YAML when collected: say what to install rather than fail to import.
need("yaml")
