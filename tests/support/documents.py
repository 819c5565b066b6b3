"""Edits of a parsed YAML/JSON document for tests that break one key of a policy file.

Paths are ``/``-separated keys; a part that meets a list is its index (``rules/0/name``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Edit = Callable[[dict[str, Any]], None]


def node_at(document: dict[str, Any], parts: list[str]) -> Any:
    node: Any = document
    for part in parts:
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def set_at(path: str, value: Any) -> Edit:
    """An edit that sets the key at ``path`` to ``value``."""
    *parents, key = path.split("/")

    def edit(document: dict[str, Any]) -> None:
        parent = node_at(document, parents)
        parent[int(key) if isinstance(parent, list) else key] = value

    return edit


def delete_at(path: str) -> Edit:
    """An edit that deletes the key at ``path``."""
    *parents, key = path.split("/")

    def edit(document: dict[str, Any]) -> None:
        parent = node_at(document, parents)
        del parent[int(key) if isinstance(parent, list) else key]

    return edit
