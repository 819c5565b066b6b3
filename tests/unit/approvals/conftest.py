"""Fixtures of the approval tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from include.policies.approvals import APPROVALS_FILE, load_approvals_file
from include.policies.loader import PolicyError


@pytest.fixture
def approvals_problems(tmp_path: Path) -> Callable[[Callable[[Any], Any]], list[str]]:
    """Load the real approval policy with ``change`` made to its parsed document (from a file of the
    test's own), which must be refused; return the problems the refusal names against that file (its
    lines ``<file>: <problem>``, without the ``<file>: ``)."""

    def problems(change: Callable[[Any], Any]) -> list[str]:
        document = yaml.safe_load(APPROVALS_FILE.read_text(encoding="utf-8"))
        change(document)
        path = tmp_path / "approvals.yaml"
        path.write_text(yaml.safe_dump(document), encoding="utf-8")
        with pytest.raises(PolicyError) as refused:
            load_approvals_file(path)
        prefix = f"{path}: "
        lines = (line.strip() for line in str(refused.value).splitlines())
        return [line.removeprefix(prefix) for line in lines if line.startswith(prefix)]

    return problems
