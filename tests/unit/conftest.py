"""Fixtures of the offline unit tests: no services, no database, no network."""

from __future__ import annotations

import os
import tempfile
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

# Airflow reads its configuration when first imported: keep it away from any real installation.
if "AIRFLOW_HOME" not in os.environ:
    os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="orchestrator-unit-airflow-")
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

from include.policies.loader import DOMAINS_FILE


@pytest.fixture
def policy_document() -> dict[str, Any]:
    """A fresh, mutable copy of the real domain policy."""
    return yaml.safe_load(DOMAINS_FILE.read_text(encoding="utf-8"))


@pytest.fixture
def write_policy(tmp_path: Path) -> Callable[[Any], Path]:
    """Write a (modified) policy document to a file of its own and return the path."""

    def write(document: Any, name: str = "domains.yaml") -> Path:
        path = tmp_path / "policy" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        text = document if isinstance(document, str) else yaml.safe_dump(document, sort_keys=False)
        path.write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture
def dag_folder(tmp_path: Path) -> Callable[..., Path]:
    """Write DAG files (``name=source``) into a fresh folder of this test; return the folder.

    DagBag caches imported modules by file path, so every test gets paths of its own (tmp_path).
    """

    def write(**files: str) -> Path:
        folder = tmp_path / "dags"
        folder.mkdir(exist_ok=True)
        for name, source in files.items():
            (folder / f"{name}.py").write_text(textwrap.dedent(source).lstrip(), encoding="utf-8")
        return folder.resolve()

    return write


@pytest.fixture(autouse=True)
def creation_locks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """No shared store offline: ConnectorHook.create_once's lock (include/connectors/ratelimit.py
    ``creation_lock``) only records the names it would lock. The lock itself is tested against a
    real PostgreSQL and Redis (tests/integration/connectors/test_creation_lock.py)."""
    from contextlib import contextmanager

    import include.connectors.base as base

    names: list[str] = []

    @contextmanager
    def recorded(url: str, name: str, **_: Any) -> Any:
        names.append(name)
        yield

    monkeypatch.setattr(base, "creation_lock", recorded)
    return names
