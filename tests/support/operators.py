"""A step's connector replaced by a mock in operator tests: the operator's ``hook`` property patched."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock


@contextmanager
def patched_hook(operator_class: type, **attributes: Any) -> Iterator[mock.MagicMock]:
    """Patch ``operator_class.hook`` for the block and yield the hook every instance then gets, with
    ``attributes`` set on it (such as the ``role_arn`` a step's audit record names)."""
    with mock.patch.object(operator_class, "hook", new_callable=mock.PropertyMock) as prop:
        hook: mock.MagicMock = prop.return_value
        for name, value in attributes.items():
            setattr(hook, name, value)
        yield hook
