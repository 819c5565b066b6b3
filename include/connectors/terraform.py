"""Terraform (or OpenTofu) the way careful teams run it (Atlantis is the reference).

- One state per tenant and stack: ``init -backend-config=path=<state_root>/<tenant>/<stack>.tfstate``
  (a per-tenant S3 key in production, same flag).
- ``plan -detailed-exitcode -out``: 0 = no changes (nothing to approve or apply), 2 = changes.
  The plan is summarised from ``show -json`` (adds, changes, destroys per resource type) for the
  approval question, and fingerprinted (SHA-256 of the plan file) with the state's lineage and
  serial at plan time.
- apply runs ONLY the approved plan file: its hash must equal the approved hash, it must be younger
  than ``max_plan_age``, and the state must not have moved since the plan (checked here with a
  clear error before Terraform's own "Saved plan is stale").
- Credentials are the step's capability role (``terraform-plan`` read-only for plan,
  ``terraform-apply`` for apply), passed to the CLI's environment only; the worker's own
  environment is never inherited, so no ambient AWS credentials reach Terraform.
- Every line Terraform prints goes to the task log through the masker; sensitive outputs are
  never printed or returned.

The connection ``terraform_default`` (extras) configures ``binary`` (``terraform`` or ``tofu``),
``work_root`` (plan workspaces, shared by the workers), ``state_root`` and ``max_plan_age_seconds``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from include.connectors.aws import _assume, assume_role_request, base_aws
from include.connectors.context import RunContext

DEFAULT_CONN_ID = "terraform_default"
PLAN_FILE = "tfplan"
PLAN_EXIT_NO_CHANGES, PLAN_EXIT_ERROR, PLAN_EXIT_CHANGES = 0, 1, 2
# Actions from Terraform's JSON plan format, as the summary names them.
ACTION_NAMES = {
    ("create",): "add",
    ("update",): "change",
    ("delete",): "destroy",
    ("delete", "create"): "replace",
    ("create", "delete"): "replace",
}


class TerraformError(RuntimeError):
    """Terraform failed or a plan may not be applied; the message says which and why."""


@dataclass(frozen=True)
class TerraformSettings:
    binary: str
    work_root: Path
    state_root: Path
    max_plan_age: timedelta
    # Configuration path (as the workflow names it, repo-relative) -> the one to run instead. Only
    # where the binary cannot run the real one: the local stand-in CLI models a small subset of
    # Terraform, so the devstack maps each real module to a model of it (README, "Terraform steps").
    sources: Mapping[str, str] = field(default_factory=dict)

    def source_for(self, source: Path, repo_root: Path) -> Path:
        """The configuration to run for ``source`` (itself unless the connection maps it)."""
        try:
            key = source.resolve().relative_to(repo_root.resolve()).as_posix()
        except ValueError:
            key = str(source)
        mapped = self.sources.get(key)
        if mapped is None:
            return source
        path = Path(mapped)
        return path if path.is_absolute() else repo_root / path

    @classmethod
    def from_connection(cls, conn_id: str = DEFAULT_CONN_ID) -> TerraformSettings:
        from airflow.sdk import BaseHook

        extra = BaseHook.get_connection(conn_id).extra_dejson
        missing = [key for key in ("binary", "work_root", "state_root") if not extra.get(key)]
        if missing:
            raise TerraformError(f"connection {conn_id}: extra needs {', '.join(missing)}")
        return cls(
            binary=extra["binary"],
            work_root=Path(extra["work_root"]),
            state_root=Path(extra["state_root"]),
            max_plan_age=timedelta(seconds=float(extra.get("max_plan_age_seconds", 3600))),
            sources=dict(extra.get("sources") or {}),
        )


@dataclass(frozen=True)
class PlanSummary:
    """What a plan would do, for the approval question and the run record."""

    changes: bool
    add: int
    change: int
    destroy: int
    replace: int
    by_type: dict[str, dict[str, int]]
    destroyed: list[str]

    @property
    def destructive(self) -> bool:
        return self.destroy > 0 or self.replace > 0

    def markdown(self) -> str:
        if not self.changes:
            return "No changes."
        lines = [
            f"**{self.add} to add, {self.change} to change, {self.replace} to replace, "
            f"{self.destroy} to destroy**",
            "",
            "| resource type | add | change | replace | destroy |",
            "|---|---|---|---|---|",
        ]
        for rtype, counts in sorted(self.by_type.items()):
            cells = " | ".join(str(counts.get(k, 0)) for k in ("add", "change", "replace", "destroy"))
            lines.append(f"| `{rtype}` | {cells} |")
        if self.destroyed:
            lines += ["", "**DESTROYS:** " + ", ".join(f"`{a}`" for a in self.destroyed)]
        return "\n".join(lines)


def summarize_plan(plan_json: Mapping[str, Any]) -> PlanSummary:
    """Count the actions of a ``terraform show -json`` plan per resource type."""
    totals: Counter[str] = Counter()
    by_type: dict[str, Counter[str]] = defaultdict(Counter)
    destroyed = []
    for change in plan_json.get("resource_changes", []):
        name = ACTION_NAMES.get(tuple(change["change"]["actions"]))
        if name is None:  # no-op, read
            continue
        totals[name] += 1
        by_type[change["type"]][name] += 1
        if name in ("destroy", "replace"):
            destroyed.append(change["address"])
    return PlanSummary(
        changes=bool(totals),
        add=totals["add"],
        change=totals["change"],
        destroy=totals["destroy"],
        replace=totals["replace"],
        by_type={rtype: dict(counts) for rtype, counts in by_type.items()},
        destroyed=sorted(destroyed),
    )


@dataclass
class PlanRecord:
    """What the plan step hands to the gate and to apply (XCom; no plan content, no secrets)."""

    tenant: str
    stack: str
    workspace: str
    sha256: str
    created_at: str
    state_lineage: str | None
    state_serial: int | None
    summary: dict[str, Any] = field(default_factory=dict)
    summary_markdown: str = ""
    destructive: bool = False

    def as_xcom(self) -> dict[str, Any]:
        return asdict(self)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def capability_environment(
    capability: str, tenant: str, run: RunContext, aws_conn_id: str = "aws_default"
) -> dict[str, str]:
    """AWS environment variables for a CLI acting as ``orchestrator-<capability>`` in the tenant's account.

    One AssumeRole (15-minute session): an apply longer than that needs the provider's own
    ``assume_role`` block instead.
    """
    base = base_aws(aws_conn_id)
    credentials = _assume(base, assume_role_request(capability, tenant, run))
    env = {
        "AWS_ACCESS_KEY_ID": credentials["access_key"],
        "AWS_SECRET_ACCESS_KEY": credentials["secret_key"],
        "AWS_SESSION_TOKEN": credentials["token"],
    }
    if base.region_name:
        env["AWS_REGION"] = env["AWS_DEFAULT_REGION"] = base.region_name
    endpoint = base.endpoint_url_for("sts")
    if endpoint:  # a local AWS (moto); the AWS SDKs and the provider honour AWS_ENDPOINT_URL
        env["AWS_ENDPOINT_URL"] = endpoint
    return env


class TerraformRunner:
    """The CLI in one workspace (a copy of the configuration) for one tenant and stack.

    :param log: called with each output line (the task logger, which masks registered secrets).
    """

    def __init__(
        self,
        settings: TerraformSettings,
        *,
        source: Path,
        tenant: str,
        stack: str,
        workspace: str,
        env: Mapping[str, str],
        log: Callable[[str], None],
    ) -> None:
        self.settings = settings
        self.source = source
        self.tenant = tenant
        self.stack = stack
        self.workdir = settings.work_root / tenant / stack / workspace
        self.state_file = settings.state_root / tenant / f"{stack}.tfstate"
        # The correlation id of the last apply, next to the state (see plan()).
        self.applied_file = settings.state_root / tenant / f"{stack}.applied.json"
        self.env = dict(env)
        self.log = log

    # -- process --------------------------------------------------------------------------------

    def _environment(self) -> dict[str, str]:
        # Built from nothing: no AWS_* (or any other) variable of the worker leaks into Terraform.
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.workdir),
            "TF_IN_AUTOMATION": "1",
            "TF_INPUT": "0",
            "CHECKPOINT_DISABLE": "1",
            **self.env,
        }

    def run(self, *args: str, ok: tuple[int, ...] = (0,), echo: bool = True) -> tuple[int, str]:
        """Run ``binary -chdir=<workdir> args``, each line to the log; raise unless the exit is in ``ok``."""
        command = [self.settings.binary, f"-chdir={self.workdir}", *args]
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=self._environment(),
            text=True,
        )
        lines = []
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            if echo:
                self.log(line.rstrip("\n"))
        code = process.wait()
        output = "".join(lines)
        if code not in ok:
            last = next((ln.strip() for ln in reversed(lines) if ln.strip()), "no output")
            raise TerraformError(
                f"terraform {args[0]} failed (exit {code}) for {self.tenant}/{self.stack}: {last}"
            )
        return code, output

    # -- steps ----------------------------------------------------------------------------------

    def prepare(self) -> None:
        """Copy the configuration into the workspace (once) and ``init`` with the tenant's state."""
        if not self.workdir.exists():
            self.workdir.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(
                self.source, self.workdir, ignore=shutil.ignore_patterns(".terraform*", "*.tfstate*")
            )
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        self.run("init", "-input=false", "-no-color", f"-backend-config=path={self.state_file}")

    def state(self) -> tuple[str | None, int | None]:
        _, output = self.run("state", "pull", echo=False)
        state = json.loads(output) if output.strip() else {}
        return state.get("lineage"), state.get("serial")

    def last_applied_correlation_id(self) -> str | None:
        if not self.applied_file.exists():
            return None
        return json.loads(self.applied_file.read_text()).get("correlation_id")

    def plan(self, variables: Mapping[str, str], *, correlation_id: str, destroy: bool = False) -> PlanRecord:
        """Plan; ``correlation_id`` is tagged on every resource the plan changes.

        Re-running a workflow must change nothing (SCALE-3), but a new run has a new correlation id,
        and a tag change is a change. So the plan is made first with the correlation id of the last
        apply: no changes means no changes. Only a real change is planned again with this run's id,
        which then lands on what it touches.
        """
        previous = self.last_applied_correlation_id()
        if previous and previous != correlation_id and not destroy:
            record = self._plan({**variables, "correlation_id": previous}, destroy=destroy)
            if not record.summary["changes"]:
                return record
        return self._plan({**variables, "correlation_id": correlation_id}, destroy=destroy)

    def record_apply(self, correlation_id: str) -> None:
        self.applied_file.write_text(json.dumps({"correlation_id": correlation_id}))

    def _plan(self, variables: Mapping[str, str], *, destroy: bool) -> PlanRecord:
        args = [
            "plan",
            "-input=false",
            "-no-color",
            "-detailed-exitcode",
            "-lock-timeout=60s",
            f"-out={PLAN_FILE}",
        ]
        args += ["-destroy"] if destroy else []
        for key, value in sorted(variables.items()):
            args += ["-var", f"{key}={value}"]
        lineage, serial = self.state()
        code, _ = self.run(*args, ok=(PLAN_EXIT_NO_CHANGES, PLAN_EXIT_CHANGES))
        _, shown = self.run("show", "-json", PLAN_FILE, echo=False)  # may hold sensitive values: not logged
        summary = summarize_plan(json.loads(shown))
        if (code == PLAN_EXIT_CHANGES) != summary.changes:
            raise TerraformError(
                f"plan exit code {code} disagrees with the plan JSON for {self.tenant}/{self.stack}"
            )
        return PlanRecord(
            tenant=self.tenant,
            stack=self.stack,
            workspace=self.workdir.name,
            sha256=sha256_of(self.workdir / PLAN_FILE),
            created_at=datetime.now(UTC).isoformat(),
            state_lineage=lineage,
            state_serial=serial,
            summary=asdict(summary),
            summary_markdown=summary.markdown(),
            destructive=summary.destructive,
        )

    def verify(self, record: Mapping[str, Any], approved_sha256: str, now: datetime) -> Path:
        """The plan file, if it is the approved one, fresh, and made against the current state."""
        plan = self.workdir / PLAN_FILE
        if not plan.exists():
            raise TerraformError(
                f"no plan file for {self.tenant}/{self.stack} in workspace {self.workdir.name}"
            )
        actual = sha256_of(plan)
        if actual != approved_sha256 or actual != record["sha256"]:
            raise TerraformError(
                f"plan file of {self.tenant}/{self.stack} is not the approved plan "
                f"(sha256 {actual[:12]}..., approved {approved_sha256[:12]}...): refusing to apply"
            )
        age = now - datetime.fromisoformat(record["created_at"])
        if age > self.settings.max_plan_age:
            raise TerraformError(
                f"plan of {self.tenant}/{self.stack} is {int(age.total_seconds())} s old, older than the "
                f"{int(self.settings.max_plan_age.total_seconds())} s allowed: plan again"
            )
        lineage, serial = self.state()
        if (lineage, serial) != (record["state_lineage"], record["state_serial"]):
            before = "empty" if record["state_serial"] is None else record["state_serial"]
            raise TerraformError(
                f"state of {self.tenant}/{self.stack} moved since the plan "
                f"(serial {before} -> {serial}): refusing to apply a stale plan, plan again"
            )
        return plan

    def destructive(self, plan: Path) -> bool:
        """Whether the plan file destroys or replaces anything, read from the file itself."""
        _, shown = self.run("show", "-json", plan.name, echo=False)  # may hold sensitive values: not logged
        return summarize_plan(json.loads(shown)).destructive

    def apply(self, plan: Path) -> dict[str, Any]:
        """Apply the saved plan; return the change summary from Terraform's machine-readable UI."""
        _, output = self.run("apply", "-input=false", "-no-color", "-json", plan.name, echo=False)
        summary: dict[str, Any] = {}
        for line in output.splitlines():
            try:
                message = json.loads(line)
            except json.JSONDecodeError:
                self.log(line)
                continue
            if message.get("type") == "outputs":
                continue  # values of outputs are read (and filtered) by outputs()
            self.log(message.get("@message", ""))
            if message.get("type") == "change_summary":
                summary = message.get("changes", {})
        return summary

    def outputs(self) -> dict[str, Any]:
        """Non-sensitive outputs; a sensitive one is reported as ``"(sensitive)"``, its value dropped."""
        _, output = self.run("output", "-json", echo=False)
        values = json.loads(output or "{}")
        return {name: "(sensitive)" if o.get("sensitive") else o.get("value") for name, o in values.items()}
