"""The plugins folder holds Airflow plugins only, and the product is one package.

Airflow's plugin loader imports every ``.py`` under ``plugins/`` as a top-level module named after
the file. Anything there that the product also imports by its package name runs twice (two
module objects, two sets of class objects: ``isinstance`` and registries break). These tests load
the plugins folder the way every Airflow component does, import every product module, and check
that each source file became exactly one module; and that the layers run one way, without circles.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
PRODUCT = ("include", "plugins")
PACKAGES = ("include", "devstack")

# Runs in a clean interpreter: the test session has imported much of the product already.
LOADER = r"""
import importlib, json, sys
from pathlib import Path

repo = Path(sys.argv[1]).resolve()
from airflow import plugins_manager

plugins_manager.ensure_plugins_loaded()
errors = plugins_manager.get_import_errors()
names = sorted(p.name for p in plugins_manager._get_plugins()[0])
for path in sorted((repo / "include").rglob("*.py")):
    parts = path.relative_to(repo).with_suffix("").parts
    importlib.import_module(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
files = {}
for name, module in list(sys.modules.items()):
    file = getattr(module, "__file__", None)
    if file and not Path(file).resolve().is_relative_to(repo):
        continue
    if file and Path(file).resolve().relative_to(repo).parts[:1] in (("include",), ("plugins",)):
        files.setdefault(str(Path(file).resolve().relative_to(repo)), []).append(name)
print(json.dumps({"errors": errors, "plugins": names, "files": files}))
"""


@pytest.fixture(scope="module")
def loaded() -> dict:
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(REPO),
        "AIRFLOW_HOME": str(REPO / ".local" / "plugin-loader-test"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "True",
    }
    done = subprocess.run(
        [sys.executable, "-c", LOADER, str(REPO)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_plugins_load_without_errors(loaded: dict) -> None:
    assert loaded["errors"] == {}
    assert loaded["plugins"] == [
        "orchestrator_audit",
        "orchestrator_deadlines",
        "orchestrator_kpi_report",
        "orchestrator_metrics",
    ]


def test_every_source_file_is_one_module(loaded: dict) -> None:
    twice = {file: names for file, names in loaded["files"].items() if len(names) > 1}
    assert twice == {}
    # and every product module was imported (the loader script walked include/)
    assert "include/operators/approval.py" in loaded["files"]
    assert loaded["files"]["plugins/audit_listener.py"] == ["audit_listener"]


def test_plugins_holds_only_plugin_modules() -> None:
    modules = sorted(p.relative_to(REPO / "plugins").as_posix() for p in (REPO / "plugins").rglob("*.py"))
    assert modules == ["audit_listener.py", "deadlines.py", "kpi_report.py", "metrics_listener.py"]
    assert (REPO / "plugins" / ".airflowignore").is_file()


def _imports(path: Path) -> list[tuple[str, int]]:
    """The modules a file imports: module level only (imports inside functions run late)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[tuple[str, int]] = []
    for node in tree.body:
        statements = [node]
        if isinstance(node, ast.If):  # `if TYPE_CHECKING:` blocks never run
            continue
        if isinstance(node, ast.Try):
            statements = [*node.body]
        for statement in statements:
            if isinstance(statement, ast.Import):
                found += [(alias.name, statement.lineno) for alias in statement.names]
            elif isinstance(statement, ast.ImportFrom) and statement.module and not statement.level:
                found.append((statement.module, statement.lineno))
                found += [(f"{statement.module}.{alias.name}", statement.lineno) for alias in statement.names]
    return found


def _module_files(package: str) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for path in sorted((REPO / package).rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


def test_the_product_never_imports_plugins_or_devstack() -> None:
    wrong = [
        f"{path.relative_to(REPO)}:{line} imports {name}"
        for package in PRODUCT
        for path in sorted((REPO / package).rglob("*.py"))
        for name, line in _imports(path) + _late_imports(path)
        if name.split(".")[0] in ("plugins", "devstack", "tests", "bench")
    ]
    assert wrong == []


def _late_imports(path: Path) -> list[tuple[str, int]]:
    """Every import in a file, inside functions too."""
    found: list[tuple[str, int]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append((node.module, node.lineno))
            found += [(f"{node.module}.{alias.name}", node.lineno) for alias in node.names]
    return found


def test_no_import_circle() -> None:
    """Counting the imports inside functions too: a late import that closes a circle only hides it."""
    modules = {name: path for package in PACKAGES for name, path in _module_files(package).items()}
    graph = {
        name: sorted({target for target, _ in _late_imports(path) if target in modules and target != name})
        for name, path in modules.items()
    }
    circles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for target in graph[node]:
            if state.get(target) == 1:
                circles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert circles == []
