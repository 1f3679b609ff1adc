"""Shared fixtures. Tests use real runtimes and real protocol peers; anything
mocked says why in its docstring (only a real phone or macOS may be mocked)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("MPK_CACHE_DIR", str(ROOT / ".mpk-cache" / "tests"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if sys.platform != "darwin":
        skip = pytest.mark.skip(reason="needs macOS (CoreML prediction / xcrun); this is " + sys.platform)
        for item in items:
            if "macos" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(autouse=True)
def _own_environment():
    """Each test gets the environment it started with back. A test that runs an mpk command in-process (Click's
    CliRunner) lets it set process-wide variables, e.g. ``TORCH_LOGS=-all`` from ``quiet_third_party``; left in
    place, they reach every later test's subprocesses and change what those print (a CI run failed this way)."""
    saved = dict(os.environ)
    yield
    if os.environ != saved:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT
