"""Summarise what a change does to the workflows, for the pull-request reviewer.

``python -m include.cli change-summary`` compares two revisions (by default the merge base with
``origin/main`` and the working tree) and reports the effect of the change rather than its diff:
DAGs added, removed and changed, per changed DAG the tasks added or removed and the tasks whose
pool, priority weight or retries moved (also when the cause is a domain policy edit), domain
policy entries changed, approval gates changed, and every DAG file that fails to import.

Each revision is described in its own Python process (``--describe ROOT``) because both revisions
ship a package named ``include`` and one interpreter can import only one of them. The describe
step parses DAG files with a :class:`DagBag`; it needs no database and no network.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

POLICY_PATH = "include/policies/domains.yaml"
DEFAULT_BASES = ("origin/main", "main")
# Operators whose class (or a base class) is named like this wait for a human decision.
APPROVAL_CLASS_MARKERS = ("HITL", "Approval")
DAG_FIELDS = ("file", "schedule", "max_active_runs")
DESCRIBE_TIMEOUT_SECONDS = 600


class ChangeSummaryError(RuntimeError):
    """A revision cannot be resolved, materialised or described; the message says which and why."""


class _Absent:
    """Marks a key that one side does not have (unlike ``None``, which is a value)."""

    def __repr__(self) -> str:
        return "(unset)"


ABSENT: Any = _Absent()


@dataclass(frozen=True)
class Revision:
    """A side of the comparison: ``commit`` is ``None`` for the working tree."""

    label: str
    commit: str | None

    def as_json(self) -> dict[str, str | None]:
        return {"ref": self.label, "commit": self.commit}


# --- describe: runs in a child process, with the revision's root first on sys.path ----------------


def is_approval_gate(operator_class: type) -> bool:
    """True when the operator class or one of its bases is an approval / human-in-the-loop operator."""
    return any(marker in cls.__name__ for cls in operator_class.__mro__ for marker in APPROVAL_CLASS_MARKERS)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _schedule_text(schedule: Any) -> str | None:
    if schedule is None or isinstance(schedule, str):
        return schedule
    if isinstance(schedule, timedelta):
        return f"every {schedule}"
    text = repr(schedule)
    # A default repr carries a memory address and would look changed on every comparison.
    return type(schedule).__name__ if " at 0x" in text else text


def _describe_task(task: Any) -> dict[str, Any]:
    info = {
        "operator": task.operator_name,
        "pool": task.pool,
        "priority_weight": task.priority_weight,
        "retries": task.retries,
        "approval_gate": is_approval_gate(type(task)),
    }
    if info["approval_gate"]:
        info["response_timeout"] = _text(getattr(task, "response_timeout", None))
    return info


def _relative(path: str | Path, root: Path) -> str:
    try:
        return Path(path).resolve().relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _describe_dag(dag: Any, root: Path) -> dict[str, Any]:
    return {
        "file": _relative(dag.fileloc, root),
        "tags": sorted(dag.tags),
        "schedule": _schedule_text(dag.schedule),
        "max_active_runs": dag.max_active_runs,
        "tasks": {task.task_id: _describe_task(task) for task in sorted(dag.tasks, key=lambda t: t.task_id)},
    }


def describe_revision(root: Path) -> dict[str, Any]:
    """Every DAG under ``root/dags`` with its scheduling-relevant settings, plus the import errors."""
    root = root.resolve()
    dags_dir = root / "dags"
    if not dags_dir.is_dir():
        return {"dags": {}, "import_errors": {}}
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(str(dags_dir), safe_mode=False)
    return {
        "dags": {dag_id: _describe_dag(dag, root) for dag_id, dag in sorted(bag.dags.items())},
        "import_errors": {_relative(path, root): text for path, text in sorted(bag.import_errors.items())},
    }


def _describe_main(root: Path) -> int:
    # Airflow logs to stdout while it parses DAG files: send fd 1 to stderr and keep a private
    # copy of the real stdout for the JSON document alone.
    json_out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    description = describe_revision(root)
    json.dump(description, json_out, sort_keys=True)
    json_out.write("\n")
    json_out.close()
    return 0


# --- materialise and describe the two revisions ------------------------------------------------------


def _git(repo: Path, *args: str) -> str:
    result = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ChangeSummaryError(f"git {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout.strip()


def _commit_of(repo: Path, ref: str) -> str | None:
    result = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip() if result.returncode == 0 else None


def resolve_head(repo: Path, ref: str | None) -> Revision:
    if ref is None:
        return Revision(label="working tree", commit=None)
    commit = _commit_of(repo, ref)
    if commit is None:
        raise ChangeSummaryError(f"--head {ref!r} is not a commit in {repo}")
    return Revision(label=ref, commit=commit)


def resolve_base(repo: Path, ref: str | None, head: Revision) -> Revision:
    """The base ref's merge base with the head, so the summary shows what the PR diff shows."""
    candidates = (ref,) if ref else DEFAULT_BASES
    for candidate in candidates:
        commit = _commit_of(repo, candidate)
        if commit is not None:
            merge_base = subprocess.run(
                ["git", "merge-base", commit, head.commit or "HEAD"],
                cwd=repo,
                capture_output=True,
                text=True,
                check=False,
            ).stdout.strip()
            return Revision(label=candidate, commit=merge_base or commit)
    raise ChangeSummaryError(f"no base revision: none of {', '.join(candidates)} is a commit in {repo}")


def materialise(repo: Path, commit: str, destination: Path) -> Path:
    """Extract the tree of ``commit`` into ``destination`` without touching the repository."""
    archive = subprocess.run(
        ["git", "archive", "--format=tar", commit], cwd=repo, capture_output=True, check=False
    )
    if archive.returncode != 0:
        raise ChangeSummaryError(f"git archive {commit} failed: {archive.stderr.decode().strip()}")
    destination.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(destination, filter="data")
    return destination


def _describe_env(root: Path, airflow_home: Path) -> dict[str, str]:
    airflow_home.mkdir(parents=True, exist_ok=True)
    return {
        **os.environ,
        # Only the revision's own code: the caller's PYTHONPATH may point at the other revision.
        "PYTHONPATH": str(root),
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(root / "dags"),
        # Parsing needs no database; pointing at a throw-away one keeps a shared one out of reach.
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home / 'airflow.db'}",
    }


def _start_describe(root: Path, airflow_home: Path) -> subprocess.Popen[str]:
    # Run this file by path, not ``-m include.cli...``: the revision's ``include`` may predate it.
    return subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--describe", str(root)],
        cwd=root,
        env=_describe_env(root, airflow_home),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish_describe(process: subprocess.Popen[str], label: str) -> dict[str, Any]:
    try:
        stdout, stderr = process.communicate(timeout=DESCRIBE_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise ChangeSummaryError(f"describing {label} took over {DESCRIBE_TIMEOUT_SECONDS}s") from None
    if process.returncode != 0:
        tail = "\n".join(stderr.strip().splitlines()[-15:])
        raise ChangeSummaryError(f"describing {label} failed (exit {process.returncode}):\n{tail}")
    return json.loads(stdout)


def describe_both(base_root: Path, head_root: Path, workdir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Describe both revisions in parallel child processes."""
    base_proc = _start_describe(base_root, workdir / "airflow-home-base")
    head_proc = _start_describe(head_root, workdir / "airflow-home-head")
    try:
        base = _finish_describe(base_proc, "base")
    finally:
        head = _finish_describe(head_proc, "head")
    return base, head


def read_policy(root: Path) -> tuple[dict[str, Any], str | None]:
    """The raw domain policy document of a revision and, if it cannot be read, why."""
    path = root / POLICY_PATH
    if not path.is_file():
        return {}, None
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        return {}, f"{POLICY_PATH}: not valid YAML: {exc}"
    return (document if isinstance(document, dict) else {}), None


# --- compare -----------------------------------------------------------------------------------------


def _change(old: Any, new: Any) -> dict[str, Any]:
    return {"old": old, "new": new}


def _field_changes(old: dict[str, Any], new: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    return {
        field: _change(old.get(field, ABSENT), new.get(field, ABSENT))
        for field in fields
        if old.get(field, ABSENT) != new.get(field, ABSENT)
    }


def _task_changes(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    fields = tuple(sorted(old.keys() | new.keys()))
    return _field_changes(old, new, fields)


def diff_tasks(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    changed = {
        task_id: _task_changes(old[task_id], new[task_id]) for task_id in sorted(old.keys() & new.keys())
    }
    return {
        "tasks_added": sorted(new.keys() - old.keys()),
        "tasks_removed": sorted(old.keys() - new.keys()),
        "tasks_changed": {task_id: fields for task_id, fields in changed.items() if fields},
    }


def diff_dag(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """What changed in one DAG present on both sides; empty when nothing did."""
    change = {
        "fields": _field_changes(old, new, DAG_FIELDS),
        "tags_added": sorted(set(new["tags"]) - set(old["tags"])),
        "tags_removed": sorted(set(old["tags"]) - set(new["tags"])),
        **diff_tasks(old["tasks"], new["tasks"]),
    }
    return {key: value for key, value in change.items() if value}


def diff_dags(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    changed = {dag_id: diff_dag(old[dag_id], new[dag_id]) for dag_id in sorted(old.keys() & new.keys())}
    return {
        "added": {dag_id: new[dag_id] for dag_id in sorted(new.keys() - old.keys())},
        "removed": {dag_id: old[dag_id] for dag_id in sorted(old.keys() - new.keys())},
        "changed": {dag_id: change for dag_id, change in changed.items() if change},
    }


def _gates(dags: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        f"{dag_id}.{task_id}": task
        for dag_id, dag in dags.items()
        for task_id, task in dag["tasks"].items()
        if task.get("approval_gate")
    }


def diff_gates(old_dags: dict[str, Any], new_dags: dict[str, Any]) -> dict[str, Any]:
    """Approval gates (``<dag_id>.<task_id>``) added, removed or reconfigured, across all DAGs."""
    old, new = _gates(old_dags), _gates(new_dags)
    changed = {gate: _task_changes(old[gate], new[gate]) for gate in sorted(old.keys() & new.keys())}
    return {
        "added": {gate: new[gate]["operator"] for gate in sorted(new.keys() - old.keys())},
        "removed": {gate: old[gate]["operator"] for gate in sorted(old.keys() - new.keys())},
        "changed": {gate: fields for gate, fields in changed.items() if fields},
    }


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """``{"soc": {"approval": {"timeout": "15m"}}}`` -> ``{"soc.approval.timeout": "15m"}``.

    Lists are leaves: ``escalate_to`` changes as one value.
    """
    if not isinstance(value, dict) or not value:
        return {prefix: value} if prefix else {}
    flat: dict[str, Any] = {}
    for key, item in value.items():
        flat.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def _policy_view(document: dict[str, Any], domains: set[str]) -> dict[str, Any]:
    # Domain entries are keyed by the domain name alone (``soc.approval.timeout``), as people say them.
    shared = {key: value for key, value in document.items() if key != "domains"}
    own = {name: body for name, body in (document.get("domains") or {}).items() if name in domains}
    return flatten({**shared, **own})


def diff_policy(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Domains added/removed and every changed key path of the domain policy, ``old -> new``."""
    old_domains, new_domains = set(old.get("domains") or {}), set(new.get("domains") or {})
    common = old_domains & new_domains
    old_flat, new_flat = _policy_view(old, common), _policy_view(new, common)
    changes = {
        key: _change(old_flat.get(key, ABSENT), new_flat.get(key, ABSENT))
        for key in sorted(old_flat.keys() | new_flat.keys())
        if old_flat.get(key, ABSENT) != new_flat.get(key, ABSENT)
    }
    return {
        "domains_added": sorted(new_domains - old_domains),
        "domains_removed": sorted(old_domains - new_domains),
        "changes": changes,
    }


def compare(
    base: Revision,
    head: Revision,
    descriptions: tuple[dict[str, Any], dict[str, Any]],
    policies: tuple[tuple[dict[str, Any], str | None], tuple[dict[str, Any], str | None]],
) -> dict[str, Any]:
    """The whole summary as one JSON-serialisable document."""
    (old, new), ((old_policy, old_error), (new_policy, new_error)) = descriptions, policies
    return {
        "base": base.as_json(),
        "head": head.as_json(),
        "import_errors": {"base": old["import_errors"], "head": new["import_errors"]},
        "policy_errors": {side: error for side, error in (("base", old_error), ("head", new_error)) if error},
        "dag_count": {"base": len(old["dags"]), "head": len(new["dags"])},
        "dags": diff_dags(old["dags"], new["dags"]),
        "policy": diff_policy(old_policy, new_policy),
        "approval_gates": diff_gates(old["dags"], new["dags"]),
    }


def summarise(repo: Path, base_ref: str | None = None, head_ref: str | None = None) -> dict[str, Any]:
    """Materialise, describe and compare the two revisions of ``repo``."""
    head = resolve_head(repo, head_ref)
    base = resolve_base(repo, base_ref, head)
    with tempfile.TemporaryDirectory(prefix="change-summary-") as tmp:
        workdir = Path(tmp).resolve()
        base_root = materialise(repo, str(base.commit), workdir / "base")
        head_root = repo if head.commit is None else materialise(repo, head.commit, workdir / "head")
        descriptions = describe_both(base_root, head_root, workdir)
        policies = (read_policy(base_root), read_policy(head_root))
    return compare(base, head, descriptions, policies)


# --- render ------------------------------------------------------------------------------------------


def fmt(value: Any) -> str:
    """A value as a reviewer reads it: ``15m``, ``[a, b]``, ``None``, ``(unset)``."""
    if isinstance(value, list):
        return "[" + ", ".join(fmt(item) for item in value) + "]"
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value) if value is ABSENT else str(value)


def _arrow(change: dict[str, Any]) -> str:
    return f"{fmt(change['old'])} -> {fmt(change['new'])}"


def _first_line_of_error(traceback_text: str) -> str:
    lines = [line.strip() for line in traceback_text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "import failed"


def _revision_text(revision: dict[str, Any]) -> str:
    ref, commit = revision["ref"], revision["commit"]
    if commit is None:
        return ref
    return f"`{commit[:12]}`" if commit.startswith(ref) else f"`{ref}` (`{commit[:12]}`)"


def render_errors(summary: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    head_errors, policy_error = summary["import_errors"]["head"], summary["policy_errors"].get("head")
    if head_errors:
        lines += ["> [!CAUTION]", f"> **Head: {len(head_errors)} DAG file(s) fail to import.**"]
        lines += [f"> - `{path}`: {_first_line_of_error(text)}" for path, text in head_errors.items()]
        lines.append("")
    if policy_error:
        lines += ["> [!CAUTION]", f"> **Head: the domain policy cannot be read.** {policy_error}", ""]
    base_errors = summary["import_errors"]["base"]
    if base_errors:
        lines.append(f"Base: {len(base_errors)} DAG file(s) already failed to import:")
        lines += [f"- `{path}`: {_first_line_of_error(text)}" for path, text in base_errors.items()]
        lines.append("")
    return lines


def _removed_note(dag: dict[str, Any], head_errors: dict[str, Any]) -> str:
    return ", its file fails to import in head" if dag["file"] in head_errors else ""


def render_dag_list(summary: dict[str, Any]) -> list[str]:
    dags, counts = summary["dags"], summary["dag_count"]
    lines = [
        "### DAGs",
        f"{counts['base']} in base, {counts['head']} in head: {len(dags['added'])} added, "
        f"{len(dags['removed'])} removed, {len(dags['changed'])} changed.",
        "",
    ]
    for dag_id, dag in dags["added"].items():
        lines.append(f"- added `{dag_id}` ({dag['file']}, {len(dag['tasks'])} tasks)")
    for dag_id, dag in dags["removed"].items():
        note = _removed_note(dag, summary["import_errors"]["head"])
        lines.append(f"- removed `{dag_id}` ({dag['file']}{note})")
    lines += [f"- changed `{dag_id}`" for dag_id in dags["changed"]]
    return [*lines, ""]


def render_dag_change(dag_id: str, change: dict[str, Any]) -> list[str]:
    lines = [f"#### `{dag_id}`"]
    lines += [f"- {field}: {_arrow(values)}" for field, values in change.get("fields", {}).items()]
    lines += [f"- tag added: `{tag}`" for tag in change.get("tags_added", [])]
    lines += [f"- tag removed: `{tag}`" for tag in change.get("tags_removed", [])]
    lines += [f"- task added: `{task_id}`" for task_id in change.get("tasks_added", [])]
    lines += [f"- task removed: `{task_id}`" for task_id in change.get("tasks_removed", [])]
    for task_id, fields in change.get("tasks_changed", {}).items():
        lines += [f"- task `{task_id}` {field}: {_arrow(values)}" for field, values in fields.items()]
    return [*lines, ""]


def render_policy(policy: dict[str, Any]) -> list[str]:
    lines = [f"- domain added: `{name}`" for name in policy["domains_added"]]
    lines += [f"- domain removed: `{name}`" for name in policy["domains_removed"]]
    lines += [f"- {key}: {_arrow(values)}" for key, values in policy["changes"].items()]
    return [f"### Domain policy (`{POLICY_PATH}`)", *lines, ""] if lines else []


def render_gates(gates: dict[str, Any]) -> list[str]:
    lines = [f"- gate added: `{gate}` ({operator})" for gate, operator in gates["added"].items()]
    lines += [f"- gate removed: `{gate}` ({operator})" for gate, operator in gates["removed"].items()]
    for gate, fields in gates["changed"].items():
        lines += [f"- gate `{gate}` {field}: {_arrow(values)}" for field, values in fields.items()]
    return ["### Approval gates", *lines, ""] if lines else []


def _has_changes(summary: dict[str, Any]) -> bool:
    dags, policy = summary["dags"], summary["policy"]
    return any(dags.values()) or any(policy.values())


def render_markdown(summary: dict[str, Any]) -> str:
    lines = [
        "## Workflow change summary",
        "",
        f"Base {_revision_text(summary['base'])}, head {_revision_text(summary['head'])}.",
        "",
        *render_errors(summary),
    ]
    if not _has_changes(summary):
        lines += ["No change to DAGs, tasks, domain policy or approval gates.", ""]
        return "\n".join(lines)
    lines += render_dag_list(summary)
    for dag_id, change in summary["dags"]["changed"].items():
        lines += render_dag_change(dag_id, change)
    lines += render_policy(summary["policy"]) + render_gates(summary["approval_gates"])
    return "\n".join(lines)


def render_json(summary: dict[str, Any]) -> str:
    return json.dumps(summary, indent=2, sort_keys=True, default=repr) + "\n"


# --- command line ------------------------------------------------------------------------------------


def _write(text: str, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")


def run_change_summary(args: argparse.Namespace) -> int:
    """Write the summary; exit 1 when the head has import errors, 2 when it cannot be made."""
    try:
        repo = Path(_git(Path.cwd(), "rev-parse", "--show-toplevel"))
        summary = summarise(repo, args.base, args.head)
    except ChangeSummaryError as exc:
        print(f"change-summary: {exc}", file=sys.stderr)
        return 2
    _write(render_markdown(summary) if args.format == "markdown" else render_json(summary), args.output)
    broken = summary["import_errors"]["head"] or summary["policy_errors"].get("head")
    return 1 if broken else 0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "change-summary",
        help="summarise what a change does to DAGs, tasks, domain policy and approval gates",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--base", metavar="REF", default=None, help="base revision (default: origin/main, else main)"
    )
    parser.add_argument(
        "--head", metavar="REF", default=None, help="head revision (default: the working tree)"
    )
    parser.add_argument("--format", choices=("markdown", "json"), default="markdown")
    parser.add_argument("--output", metavar="FILE", type=Path, default=None, help="default: stdout")
    parser.set_defaults(handler=run_change_summary)


def main(argv: list[str] | None = None) -> int:
    """``--describe ROOT``: the child-process entry point that prints one revision as JSON."""
    parser = argparse.ArgumentParser(description="Describe the DAGs of one revision as JSON.")
    parser.add_argument("--describe", metavar="ROOT", type=Path, required=True)
    return _describe_main(parser.parse_args(argv).describe)


if __name__ == "__main__":
    sys.exit(main())
