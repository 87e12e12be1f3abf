"""The Python packages the observability tests need beyond synch's own, and a clear failure
(never a skip) naming the one to install when it is missing; grafana/'s scripts as modules."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

GRAFANA = Path(__file__).resolve().parents[2] / "grafana"

# import name -> what to install. The SDK's versions carry an epoch: a bare name would pick the
# highest epoch, which may be the Grafana 10.1 flavour; pin it exactly.
PACKAGES = {
    "yaml": "PyYAML>=6",
    "matplotlib": "matplotlib>=3.8",
    "grafana_foundation_sdk": "grafana-foundation-sdk==1769699379!11.6.0",
}


class MissingDependency(ImportError):
    """A package the observability tests need is not installed."""


def need(*modules: str) -> None:
    """Raise MissingDependency naming every one of `modules` that cannot be imported."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        specs = " ".join(f"'{PACKAGES.get(m, m)}'" for m in missing)
        raise MissingDependency(
            f"the observability tests need {', '.join(missing)} (not installed): "
            f".venv/bin/pip install {specs}"
        )


def load_script(name: str, *needs: str) -> ModuleType:
    """grafana/NAME.py as module NAME, once need(*needs) found what it imports."""
    need(*needs)
    spec = importlib.util.spec_from_file_location(name, GRAFANA / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
