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

:class:`TerraformHook` runs the CLI. The connection ``terraform_default`` (extras) configures
``binary`` (``terraform`` or ``tofu``), ``work_root`` (plan workspaces, shared by the workers),
``state_root``, ``max_plan_age_seconds`` and, besides the base's retry/rate-limit ones, ``sources``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any

from include.connectors.aws import _assume, assume_role_request, base_aws
from include.connectors.base import ConnectorHook
from include.connectors.context import RunContext

DEFAULT_CONN_ID = "terraform_default"
REPO_ROOT = Path(__file__).resolve().parents[2]
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
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
    # Terraform, so the devstack maps each real module to a model of it (docs/standins.md, "Terraform").
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
    def from_extras(cls, conn_id: str, extra: Mapping[str, Any]) -> TerraformSettings:
        """From the connection's extras (``binary``, ``work_root``, ``state_root`` required).

        :param conn_id: the connection, for the error message.
        :param extra: its extras.
        :raises TerraformError: a required extra is missing.
        """
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

    :param capability: the step's capability (its role ``orchestrator-<capability>``).
    :param tenant: the tenant whose account the role is in.
    :param run: the run, for the session's name and tags.
    :param aws_conn_id: the connection with the platform's base AWS credentials.
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


def _mask(credentials: Mapping[str, str]) -> None:
    """Register the secret parts of AWS credentials with Airflow's masker (task logs)."""
    from airflow.sdk.log import mask_secret

    for key in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        if credentials.get(key):
            mask_secret(credentials[key])


class TerraformHook(ConnectorHook):
    """The Terraform (or OpenTofu) CLI for one tenant's stack, in one workspace (a copy of the
    configuration, one per run).

    Nothing runs before :meth:`prepare`, which takes the step's credentials; every command goes
    through :meth:`ConnectorHook.call` (the connection's rate limit and retry settings), ``apply``
    with one attempt only.

    :param conn_id: the connection with the CLI settings (extras ``binary``, ``work_root``,
        ``state_root``, ``max_plan_age_seconds``, ``sources``); default ``terraform_default``.
    :param tenant: the tenant whose state the stack is (``TF_VAR_tenant``).
    :param stack: the stack's name: one state per tenant and stack.
    :param source: the configuration, absolute or relative to the repository (the connection's
        ``sources`` may map it to another).
    :param workspace: the workspace's name (the run id: plan and apply of one run share it).
    :param output: called with each line Terraform prints (default: this hook's logger); give the
        task logger, which masks registered secrets.
    """

    system = "terraform"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = "generic"
    hook_name = "Terraform CLI"

    def __init__(
        self,
        conn_id: str | None = None,
        *,
        tenant: str,
        stack: str = "",
        source: str | Path = "",
        workspace: str = "",
        output: Callable[[str], None] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(conn_id, tenant=tenant, **kwargs)
        self.stack = stack
        self.source = Path(source)
        self.workspace = _UNSAFE.sub("_", workspace)
        self.output = output
        self.credentials: dict[str, str] = {}

    # -- lazily built from the connection --------------------------------------------------------

    @cached_property
    def settings(self) -> TerraformSettings:
        return TerraformSettings.from_extras(self.conn_id, self.extras)

    @cached_property
    def configuration(self) -> Path:
        """The configuration this workspace is a copy of."""
        source = self.source if self.source.is_absolute() else REPO_ROOT / self.source
        return self.settings.source_for(source, REPO_ROOT)

    @cached_property
    def workdir(self) -> Path:
        return self.settings.work_root / self.tenant / self.stack / self.workspace

    @cached_property
    def state_file(self) -> Path:
        return self.settings.state_root / self.tenant / f"{self.stack}.tfstate"

    @cached_property
    def applied_file(self) -> Path:
        """The correlation id of the last apply, next to the state (see :meth:`plan`)."""
        return self.settings.state_root / self.tenant / f"{self.stack}.applied.json"

    # -- process --------------------------------------------------------------------------------

    def _echo(self, line: str) -> None:
        (self.output or self.log.info)(line)

    def _environment(self) -> dict[str, str]:
        # Built from nothing: no AWS_* (or any other) variable of the worker leaks into Terraform.
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.workdir),
            "TF_IN_AUTOMATION": "1",
            "TF_INPUT": "0",
            "CHECKPOINT_DISABLE": "1",
            "TF_VAR_tenant": self.tenant,
            **self.credentials,
        }

    def run(
        self, *args: str, ok: tuple[int, ...] = (0,), echo: bool = True, retry: bool = True
    ) -> tuple[int, str]:
        """Run ``binary -chdir=<workdir> args``, each line to the output; raise unless the exit is in ``ok``.

        :param args: the command and its arguments.
        :param ok: the exit codes that are success.
        :param echo: print each line (off for output that may hold sensitive values).
        :param retry: the command may be repeated (everything but ``apply``).
        :raises TerraformError: another exit code; the message names the command, the stack and
            Terraform's last line.
        """
        return self.call(f"terraform {args[0]}", lambda: self._run(args, ok, echo), retry=retry)

    def _run(self, args: tuple[str, ...], ok: tuple[int, ...], echo: bool) -> tuple[int, str]:
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
                self._echo(line.rstrip("\n"))
        code = process.wait()
        output = "".join(lines)
        if code not in ok:
            last = next((ln.strip() for ln in reversed(lines) if ln.strip()), "no output")
            raise TerraformError(
                f"terraform {args[0]} failed (exit {code}) for {self.tenant}/{self.stack}: {last}"
            )
        return code, output

    # -- steps ----------------------------------------------------------------------------------

    def prepare(self, credentials: Mapping[str, str]) -> None:
        """Copy the configuration into the workspace (once) and ``init`` with the tenant's state.

        :param credentials: the step's AWS environment (:func:`capability_environment`), used by
            every command from now on; its secrets are registered with the masker.
        """
        _mask(credentials)
        self.credentials = dict(credentials)
        if not self.workdir.exists():
            self.workdir.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(
                self.configuration, self.workdir, ignore=shutil.ignore_patterns(".terraform*", "*.tfstate*")
            )
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        self.run("init", "-input=false", "-no-color", f"-backend-config=path={self.state_file}")

    def state(self) -> tuple[str | None, int | None]:
        """The state's lineage and serial (``None`` for an empty state)."""
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

        :param variables: the configuration's input variables (``-var``).
        :param correlation_id: this run's correlation id.
        :param destroy: plan the destruction of the stack.
        """
        previous = self.last_applied_correlation_id()
        if previous and previous != correlation_id and not destroy:
            record = self._plan({**variables, "correlation_id": previous}, destroy=destroy)
            if not record.summary["changes"]:
                return record
        return self._plan({**variables, "correlation_id": correlation_id}, destroy=destroy)

    def record_apply(self, correlation_id: str) -> None:
        """Note ``correlation_id`` as the last apply's (see :meth:`plan`).

        :param correlation_id: the correlation id the applied plan was made with.
        """
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
        """The plan file, if it is the approved one, fresh, and made against the current state.

        :param record: the plan step's :class:`PlanRecord` (as XCom).
        :param approved_sha256: the plan file's SHA-256 as the approvers saw it.
        :param now: the time the plan's age is measured at.
        :raises TerraformError: no plan file, another file, too old, or the state moved.
        """
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
        """Whether the plan file destroys or replaces anything, read from the file itself.

        :param plan: the plan file (from :meth:`verify`).
        """
        _, shown = self.run("show", "-json", plan.name, echo=False)  # may hold sensitive values: not logged
        return summarize_plan(json.loads(shown)).destructive

    def apply(self, plan: Path) -> dict[str, Any]:
        """Apply the saved plan, once (never retried); the change summary from Terraform's
        machine-readable UI.

        :param plan: the plan file (from :meth:`verify`).
        """
        _, output = self.run(
            "apply", "-input=false", "-no-color", "-json", plan.name, echo=False, retry=False
        )
        summary: dict[str, Any] = {}
        for line in output.splitlines():
            try:
                message = json.loads(line)
            except json.JSONDecodeError:
                self._echo(line)
                continue
            if message.get("type") == "outputs":
                continue  # values of outputs are read (and filtered) by outputs()
            self._echo(message.get("@message", ""))
            if message.get("type") == "change_summary":
                summary = message.get("changes", {})
        return summary

    def outputs(self) -> dict[str, Any]:
        """Non-sensitive outputs; a sensitive one is reported as ``"(sensitive)"``, its value dropped."""
        _, output = self.run("output", "-json", echo=False)
        values = json.loads(output or "{}")
        return {name: "(sensitive)" if o.get("sensitive") else o.get("value") for name, o in values.items()}
