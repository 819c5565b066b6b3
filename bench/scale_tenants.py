"""Hundreds of tenants (issue 24): what grows with ``tenants.yaml`` and whether it stays in budget.

For each size (default 3, 100 and 300 tenants; 3 is the committed file: acme, globex and the
internal secops) :func:`generate_tenants` writes a ``tenants.yaml`` into a temporary folder (the
committed tenants plus ``cust-0001``... with accounts of their own; never committed) and
``ORCH_TENANTS_FILE`` points every measured process at it. Each figure is taken in a fresh
process, as the component it stands for starts fresh:

- DAG parse: every file of ``dags/`` parsed as the policy check parses them (``DagBag``, the shared
  workflow code pre-imported as the DAG processor does): total and slowest file;
- trigger forms: the serialized size of every DAG (what the DAG processor writes to
  ``serialized_dag`` and the UI reads for the trigger form): total, largest, and how much of it is
  the tenant lists (bytes of the DAGs whose params embed a generated tenant, minus the same DAGs
  at 3 tenants);
- ``policy-check`` (the whole CLI, DAG parse included), ``policy-sync`` (reads no tenant: it is
  timed at every size to show it), the Terraform capability-role rendering
  (``terraform/render_capabilities.py``, tenant-independent by design: placeholders, filled by
  the module per tenant account) plus the per-tenant IAM and trust documents for every tenant and
  capability (what seeding and a per-tenant apply compute);
- devstack seeding: the per-tenant part of ``devstack/moto_seed.py`` (a credential per tenant and
  domain) and ``devstack/aws_seed.py`` (capability roles, secrets and WAF block lists per tenant
  account) against a moto server of its own (127.0.0.1:43510, started and stopped here).

Result keys (flat; ``<n>`` is the tenant count): ``tenants_<n>_parse_total_s``,
``tenants_<n>_parse_max_file_s``, ``tenants_<n>_serialized_total_kb``,
``tenants_<n>_serialized_max_kb``, ``tenants_<n>_tenant_forms_kb`` (the DAGs with a tenant list),
``tenants_<n>_policy_check_s``, ``tenants_<n>_policy_sync_s``, ``tenants_<n>_terraform_render_s``,
``tenants_<n>_tenant_documents_s``, ``tenants_<n>_seed_s``, ``tenants_<n>_seed_items``; and
``tenants_budgets_met`` (1/0) against :data:`BUDGETS`.

By hand: ``python -m bench.scale_tenants [--sizes 3 100 300] [--no-seed]`` (about 3 minutes on
the 2-core box with seeding).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from devstack.config import HOST, REPO_ROOT, VENV_BIN, Profile

DEFAULT_SIZES = (3, 100, 300)
GENERATED_PREFIX = "cust-"
FIRST_GENERATED_ACCOUNT = 500_000_000_000
PROFILE = Profile(name="tenants-bench", api_port=0, pg_port=0, moto_port=43510, smtp_port=0)
# The budgets at the largest size (300 tenants), each with its reason (docs/policies.md).
BUDGETS: dict[str, float] = {
    "parse_max_file_s": 2.0,  # policy-check's parse budget per DAG file (Airflow's timeout: 30 s)
    "parse_total_s": 10.0,  # the whole dags/ folder well inside one 30 s DAG-processor interval
    "serialized_max_kb": 128.0,  # the largest serialized DAG, fetched whole by scheduler and UI
    "serialized_total_kb": 1024.0,  # every serialized DAG, kept in memory by the scheduler
    "policy_check_s": 60.0,  # a pull request's check, DAG parse included
    "policy_sync_s": 30.0,  # a deployment step after the migrations
    "terraform_render_s": 5.0,  # render_capabilities.py in a pull request
    "tenant_documents_s": 10.0,  # every tenant's IAM and trust documents
    "seed_s": 900.0,  # a fresh devstack with every tenant's account (today's start: about 3 min)
}


def generate_tenants(count: int, directory: Path, *, base: Path | None = None) -> Path:
    """Write a ``tenants.yaml`` with ``count`` tenants (customers plus internal) into ``directory``.

    The committed tenants come first, unchanged (workflows, invoicing and triage name them); the
    rest are ``cust-0001``... with display names and accounts of their own (``5000000000xx``...).
    :returns: the file written.
    :raises ValueError: ``count`` is below the committed tenants' number.
    """
    from include.policies.tenants import TENANTS_FILE

    document = yaml.safe_load((base or TENANTS_FILE).read_text(encoding="utf-8"))
    existing = len(document.get("tenants") or {}) + len(document.get("internal") or {})
    if count < existing:
        raise ValueError(f"{count} tenants: the committed file already has {existing}")
    customers = dict(document["tenants"])
    for index in range(1, count - existing + 1):
        customers[f"{GENERATED_PREFIX}{index:04d}"] = {
            "display_name": f"Customer {index:04d} Ltd",
            "aws_account_id": f"{FIRST_GENERATED_ACCOUNT + index:012d}",
        }
    document["tenants"] = customers
    path = directory / "tenants.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def policy_folder(tenants_file: Path, directory: Path) -> Path:
    """A copy of the policy files beside ``tenants_file`` (policy-check reads the ones next to
    ``--policy``); returns its ``domains.yaml``."""
    from include.policies.loader import POLICY_DIR

    for source in POLICY_DIR.glob("*.yaml"):
        if source.name != "tenants.yaml":
            (directory / source.name).write_text(source.read_text(encoding="utf-8"), encoding="utf-8")
    if tenants_file.parent != directory:
        (directory / "tenants.yaml").write_text(tenants_file.read_text(encoding="utf-8"), encoding="utf-8")
    return directory / "domains.yaml"


def budget_verdicts(figures: dict[str, Any], size: int) -> dict[str, bool]:
    """Each budgeted figure of ``size`` tenants: within its budget (figures not measured: skipped)."""
    return {
        name: float(figures[f"tenants_{size}_{name}"]) <= budget
        for name, budget in BUDGETS.items()
        if f"tenants_{size}_{name}" in figures
    }


# --- measured in a child process (fresh imports and caches, ORCH_TENANTS_FILE set) -----------


def _child_parse() -> dict[str, Any]:
    from airflow.serialization.serialized_objects import DagSerialization

    from include.policies.checks import load_dag_folder
    from include.policies.tenants import tenant_ids

    began = time.monotonic()
    scan = load_dag_folder(REPO_ROOT / "dags")
    total = time.monotonic() - began
    if scan.import_errors:
        raise RuntimeError(f"DAG import errors: {sorted(map(str, scan.import_errors))}")
    generated = next((t for t in tenant_ids() if t.startswith(GENERATED_PREFIX)), None)
    sizes, forms = {}, {}
    for dag in scan.dags:
        serialized = DagSerialization.to_dict(dag)
        sizes[dag.dag_id] = len(json.dumps(serialized).encode()) / 1024
        if "acme" in json.dumps(serialized["dag"].get("params", []), default=str):
            forms[dag.dag_id] = sizes[dag.dag_id]
    return {
        "parse_total_s": round(total, 3),
        "parse_max_file_s": round(max(scan.parse_seconds.values()), 3),
        "dags": len(scan.dags),
        "serialized_total_kb": round(sum(sizes.values()), 1),
        "serialized_max_kb": round(max(sizes.values()), 1),
        "tenant_forms": len(forms),
        "tenant_forms_kb": round(sum(forms.values()), 1),
        "generated_tenant_in_forms": generated is not None and bool(forms),
    }


def _child_render() -> dict[str, Any]:
    sys.path.insert(0, str(REPO_ROOT / "terraform"))
    from render_capabilities import render

    from include.policies.capabilities import iam_policy_document, load_capabilities, trust_policy_document
    from include.policies.tenants import all_tenant_ids, platform_account_id, tenant_account_id

    began = time.monotonic()
    render(load_capabilities())
    rendered = time.monotonic() - began
    began = time.monotonic()
    documents = 0
    for tenant in all_tenant_ids():
        for capability in load_capabilities().capabilities.values():
            json.dumps(iam_policy_document(capability, tenant, tenant_account_id(tenant), "eu-west-1"))
            json.dumps(trust_policy_document(capability, tenant, platform_account_id()))
            documents += 2
    return {
        "terraform_render_s": round(rendered, 3),
        "tenant_documents_s": round(time.monotonic() - began, 3),
        "tenant_documents": documents,
    }


def _child_seed() -> dict[str, Any]:
    # Airflow first: its local settings (config/) import the workflow code, which imports the
    # connectors; importing a connector first would enter that cycle from the other end.
    import airflow  # noqa: F401

    from devstack import aws_seed, moto_seed
    from devstack.config import REGION
    from include.policies.loader import load_domain_policy
    from include.policies.tenants import secret_name, tenant_ids

    began = time.monotonic()
    client = moto_seed.secrets_client(PROFILE)
    items = 0
    for tenant in tenant_ids():  # moto_seed.seed's per-tenant part (the rest is per platform)
        for domain in load_domain_policy().domains:
            moto_seed._put(client, secret_name(tenant, domain), json.dumps({"token": "bench"}))
            items += 1
    items += len(aws_seed.seed_capability_roles(PROFILE.moto_url, REGION))
    return {"seed_s": round(time.monotonic() - began, 2), "seed_items": items}


CHILDREN = {"parse": _child_parse, "render": _child_render, "seed": _child_seed}


def _child_env(tenants_file: Path, airflow_home: Path) -> dict[str, str]:
    return {
        **os.environ,
        "ORCH_TENANTS_FILE": str(tenants_file),
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAG_DISCOVERY_SAFE_MODE": "False",
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / "config")]),
    }


def _in_child(what: str, env: dict[str, str]) -> dict[str, Any]:
    result = subprocess.run(
        [sys.executable, "-m", "bench.scale_tenants", "--child", what],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )
    if result.returncode != 0:
        raise RuntimeError(f"scale_tenants child {what!r} failed: {result.stderr[-3000:]}")
    return dict(json.loads(result.stdout.strip().splitlines()[-1]))


def _timed(argv: list[str], env: dict[str, str], what: str) -> float:
    began = time.monotonic()
    result = subprocess.run(argv, env=env, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed: {(result.stdout + result.stderr)[-3000:]}")
    return round(time.monotonic() - began, 2)


def _policy_sync_seconds(env: dict[str, str], home: Path) -> float:
    """``policy-sync`` on a throw-away SQLite metadata DB (migrated first, not timed)."""
    from devstack.airflow_env import AUTH_MANAGER

    env = {
        **env,
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__AUTH_MANAGER": AUTH_MANAGER,  # the roles are FAB's
        "AIRFLOW__FAB__CONFIG_FILE": str(REPO_ROOT / "config" / "webserver_config.py"),
    }
    _timed([str(VENV_BIN / "airflow"), "db", "migrate"], env, "airflow db migrate (policy-sync bench)")
    return _timed([sys.executable, "-m", "include.cli", "policy-sync"], env, "policy-sync")


class _Moto:
    """A moto server of this benchmark's own (127.0.0.1:43510), stopped on exit."""

    def __enter__(self) -> _Moto:
        from devstack import processes

        log = tempfile.NamedTemporaryFile(prefix="scale-tenants-moto-", suffix=".log", delete=False)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "devstack.standins.moto_server", "-H", HOST, "-p", str(PROFILE.moto_port)],
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        processes.wait_until(
            lambda: processes.port_open(HOST, PROFILE.moto_port), what="moto (scale_tenants)", timeout=60
        )
        return self

    def __exit__(self, *_: object) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def run(sizes: tuple[int, ...] = DEFAULT_SIZES, seed: bool = True, sync: bool = True) -> dict[str, Any]:
    """Every figure at every size, flat (see the module docstring for the keys)."""
    figures: dict[str, Any] = {}
    base_forms_kb: float | None = None
    for size in sizes:
        with tempfile.TemporaryDirectory(prefix=f"scale-tenants-{size}-") as tmp:
            folder = Path(tmp)
            (folder / "policies").mkdir()
            (folder / "home").mkdir()
            tenants_file = generate_tenants(size, folder / "policies")
            domains_file = policy_folder(tenants_file, folder / "policies")
            env = _child_env(tenants_file, folder / "home")
            parsed = _in_child("parse", env)
            rendered = _in_child("render", env)
            check_s = _timed(
                [sys.executable, "-m", "include.cli", "policy-check", "--policy", str(domains_file)],
                env,
                "policy-check",
            )
            row: dict[str, Any] = {
                **{k: v for k, v in parsed.items() if k != "generated_tenant_in_forms"},
                **rendered,
                "policy_check_s": check_s,
            }
            if sync:
                row["policy_sync_s"] = _policy_sync_seconds(env, folder / "home")
            if seed:
                with _Moto():
                    row.update(_in_child("seed", env))
            if base_forms_kb is None:
                base_forms_kb = float(parsed["tenant_forms_kb"])
            row["tenant_lists_kb"] = round(float(parsed["tenant_forms_kb"]) - base_forms_kb, 1)
            figures.update({f"tenants_{size}_{key}": value for key, value in row.items()})
    largest = max(sizes)
    verdicts = budget_verdicts(figures, largest)
    figures["tenants_budgets_met"] = int(all(verdicts.values()))
    figures["tenants_budgets_missed"] = ",".join(name for name, ok in verdicts.items() if not ok) or "-"
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES))
    parser.add_argument("--no-seed", action="store_true", help="skip the devstack seeding (moto)")
    parser.add_argument("--no-sync", action="store_true", help="skip policy-sync (SQLite metadata DB)")
    parser.add_argument("--out", default=None, help="also write the figures as JSON here")
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(CHILDREN[args.child]()))
        return
    figures = run(tuple(args.sizes), seed=not args.no_seed, sync=not args.no_sync)
    for key, value in figures.items():
        print(f"{key:40} {value}")
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
