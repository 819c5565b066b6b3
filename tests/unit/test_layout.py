"""The layout rules a newcomer relies on, checked on the code (not on a list kept by hand).

- every operator and trigger module has its unit test file in the mirrored tree;
- every public operator, hook and trigger documents each constructor parameter (Sphinx ``:param``);
- every hook is built on the one connector base;
- an operator that declares its ``capability`` never types the capability's name again.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
INCLUDE = REPO / "include"


def _modules(folder: str) -> list[Path]:
    return sorted(p for p in (INCLUDE / folder).glob("*.py") if p.name != "__init__.py")


def _classes(path: Path) -> list[ast.ClassDef]:
    return [
        node for node in ast.parse(path.read_text(encoding="utf-8")).body if isinstance(node, ast.ClassDef)
    ]


def _base_names(node: ast.ClassDef) -> set[str]:
    return {ast.unparse(base).rsplit(".", 1)[-1] for base in node.bases}


@pytest.mark.parametrize(
    ("layer", "module"),
    [
        pytest.param(layer, path.stem, id=f"{layer}/{path.stem}")
        for layer in ("operators", "triggers")
        for path in _modules(layer)
    ],
)
def test_each_operator_and_trigger_module_has_its_unit_tests(layer: str, module: str) -> None:
    folder = REPO / "tests" / "unit" / layer
    found = sorted(p.name for p in folder.glob(f"test_{module}*.py")) if folder.is_dir() else []
    assert found, f"include/{layer}/{module}.py has no tests/unit/{layer}/test_{module}*.py"


def _public_api() -> list[tuple[str, ast.ClassDef]]:
    api = []
    for layer in ("operators", "triggers", "connectors"):
        for path in sorted((INCLUDE / layer).rglob("*.py")):
            for node in _classes(path):
                kind = _base_names(node)
                is_api = node.name.endswith(("Operator", "Hook", "Trigger")) or any(
                    base.endswith(("Operator", "Hook", "Trigger")) for base in kind
                )
                if is_api and not node.name.startswith("_"):
                    api.append((f"{path.relative_to(REPO)}:{node.name}", node))
    return api


def _init_parameters(node: ast.ClassDef) -> list[str]:
    for item in node.body:
        if isinstance(item, ast.FunctionDef) and item.name == "__init__":
            arguments = item.args
            names = [a.arg for a in (*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs)]
            return [name for name in names if name not in ("self", "cls")]
    return []


@pytest.mark.parametrize(("where", "node"), [pytest.param(w, n, id=w) for w, n in _public_api()])
def test_public_operators_hooks_and_triggers_document_their_parameters(
    where: str, node: ast.ClassDef
) -> None:
    docstring = ast.get_docstring(node) or ""
    assert docstring, f"{where} has no docstring"
    init_doc = next(
        (
            ast.get_docstring(item) or ""
            for item in node.body
            if isinstance(item, ast.FunctionDef) and item.name == "__init__"
        ),
        "",
    )
    missing = [p for p in _init_parameters(node) if f":param {p}:" not in docstring + init_doc]
    assert missing == [], f"{where}: no ':param' for {', '.join(missing)}"


def test_every_hook_is_built_on_the_connector_base() -> None:
    # One base for every system: classes named *Hook under include/connectors derive from it,
    # directly or through another hook of the package.
    hooks = {}
    for path in sorted((INCLUDE / "connectors").rglob("*.py")):
        for node in _classes(path):
            if node.name.endswith("Hook"):
                hooks[node.name] = (path, _base_names(node))
    assert "ConnectorHook" in hooks

    def on_base(name: str, seen: frozenset[str] = frozenset()) -> bool:
        if name == "ConnectorHook":
            return True
        _, bases = hooks[name]
        return any(base in hooks and base not in seen and on_base(base, seen | {name}) for base in bases)

    strays = sorted(
        f"{path.relative_to(REPO)}:{name}"
        for name, (path, _) in hooks.items()
        if name != "TicketingHook" and not on_base(name)  # TicketingHook: the abstract interface
    )
    assert strays == []


def _declared_capability(node: ast.ClassDef) -> str | None:
    for item in node.body:
        if (
            isinstance(item, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "capability" for t in item.targets)
            and isinstance(item.value, ast.Constant)
            and isinstance(item.value.value, str)
        ):
            return item.value.value
    return None


def test_operators_never_retype_their_capability() -> None:
    retyped = []
    for path in _modules("operators"):
        for node in _classes(path):
            capability = _declared_capability(node)
            if not capability:
                continue
            for item in node.body:
                if (
                    isinstance(item, ast.Assign)
                    and _declared_capability(ast.ClassDef(body=[item])) is not None
                ):
                    continue
                for constant in ast.walk(item):
                    if isinstance(constant, ast.Constant) and constant.value == capability:
                        retyped.append(
                            f"{path.relative_to(REPO)}:{constant.lineno} {node.name} retypes {capability!r}"
                        )
    assert retyped == []


def test_no_stand_in_shadows_a_standard_module() -> None:
    # The Terraform stand-in runs as a script: its folder comes first on sys.path for whatever it
    # (or boto3) imports, so a sibling named like a standard module (http.py) would replace it.
    standins = sorted((REPO / "devstack" / "standins").glob("*.py"))
    assert standins
    shadows = [p.name for p in standins if p.stem in sys.stdlib_module_names]
    assert shadows == []
