"""Retention as policy (``include/policies/retention.yaml``): how long each kind of record is kept,
per tenant class, and the minimums no pull request can go below.

The file names a retention per record kind (:data:`KINDS`) for each tenant class, and which
tenants are in which class (the rest, and the platform's own records, are ``default_class``).
:func:`retention_for` answers "how long must this tenant's <kind> be kept" for the code that
applies it: the Terraform checks (the buckets' Object Lock default retention), the invoice archive
(``invoicing.yaml``), the daily task-log pruning (``platform_retention``), the evidence packs'
object retention (:func:`retain_until`).

The minimums (:data:`LEGAL_MINIMUMS`) live here, in code reviewed by its owners, not in the YAML,
so one pull request cannot lower a retention and its floor together. They are the product's
reading of German commercial and tax law and its own promises (docs/policies.md#retention), an
assumption and not legal advice. A kind that may hold personal data also has a maximum (storage
limitation, GDPR Art. 5(1)(e)): keeping task logs forever is refused too.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any, Literal

from include.policies.loader import POLICY_DIR, PolicyError, PolicyFile

RETENTION_FILE = POLICY_DIR / "retention.yaml"

RecordKind = Literal["audit", "evidence_pack", "invoice", "business_letter", "task_log", "metrics"]
KINDS: tuple[RecordKind, ...] = (
    "audit",
    "evidence_pack",
    "invoice",
    "business_letter",
    "task_log",
    "metrics",
)
DAYS_PER_YEAR = 365.25
_PERIOD = re.compile(r"^([1-9][0-9]*)([dy])$")


@dataclass(frozen=True)
class Bound:
    """A floor or a ceiling of one kind's retention, and where it comes from."""

    days: int
    text: str  # as the policy would write it: 10y, 7d
    source: str


# The product's assumptions (docs/policies.md#retention), not legal advice.
LEGAL_MINIMUMS: dict[RecordKind, Bound] = {
    "audit": Bound(2557, "7y", "the product's promise of a 7-year audit trail (docs/audit.md)"),
    "evidence_pack": Bound(2557, "7y", "the evidence of the 7-year audit trail (docs/audit.md)"),
    "invoice": Bound(
        3653,
        "10y",
        "HGB section 257 and AO section 147: 10 years for books and records (booking vouchers 8 years "
        "since 2025); the product keeps invoices for the longer of the two",
    ),
    "business_letter": Bound(
        2192, "6y", "HGB section 257(4) and AO section 147(3): 6 years for business letters"
    ),
    "task_log": Bound(7, "7d", "the product's floor: a week to investigate a failed run"),
    "metrics": Bound(90, "90d", "the product's floor: a quarter of KPI reports"),
}
MAXIMUMS: dict[RecordKind, Bound] = {
    "task_log": Bound(
        365,
        "365d",
        "storage limitation (GDPR Art. 5(1)(e)): task logs may name employees and customers' users",
    ),
}


def period_days(text: str) -> int:
    """``"30d"`` -> 30, ``"7y"`` -> 2557 (years of 365.25 days, rounded up).

    :param text: a positive number followed by ``d`` or ``y``.
    """
    match = _PERIOD.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a retention like 30d or 7y")
    count = int(match.group(1))
    return count if match.group(2) == "d" else math.ceil(count * DAYS_PER_YEAR)


@dataclass(frozen=True)
class Retention:
    """How long one tenant's records of one kind are kept."""

    kind: RecordKind
    tenant_class: str
    days: int
    text: str  # as written in the policy

    @property
    def period(self) -> timedelta:
        return timedelta(days=self.days)


@dataclass(frozen=True)
class RetentionPolicy:
    source: Path
    default_class: str
    classes: dict[str, dict[RecordKind, str]]
    tenant_classes: dict[str, str]

    def class_of(self, tenant: str | None) -> str:
        """The tenant's class; ``None`` (the platform's own records) and unnamed tenants get the default."""
        return self.tenant_classes.get(tenant or "", self.default_class)

    def retention_for(self, kind: RecordKind, tenant: str | None = None) -> Retention:
        """How long ``tenant``'s records of ``kind`` are kept.

        :param kind: one of :data:`KINDS`.
        :param tenant: the tenant; ``None`` for the platform's own records.
        :raises PolicyError: an unknown kind.
        """
        if kind not in KINDS:
            raise PolicyError(f"{self.source}: unknown record kind {kind!r} (known: {', '.join(KINDS)})")
        name = self.class_of(tenant)
        text = self.classes[name][kind]
        return Retention(kind, name, period_days(text), text)

    def longest(self, kind: RecordKind) -> Retention:
        """The longest retention of ``kind`` over every class: what a store shared by every tenant
        (the task-log folder) must keep."""
        return max(
            (
                Retention(kind, name, period_days(c[kind]), c[kind])
                for name, c in sorted(self.classes.items())
            ),
            key=lambda r: r.days,
        )


def bound_problems(document: dict[str, Any]) -> list[str]:
    """Every retention shorter than its kind's minimum or longer than its maximum,
    ``classes.<class>.<kind>: <problem>``."""
    messages = []
    for name, values in document["classes"].items():
        for kind, text in values.items():
            days, where = period_days(text), f"classes.{name}.{kind}"
            floor, ceiling = LEGAL_MINIMUMS[kind], MAXIMUMS.get(kind)
            if days < floor.days:
                messages.append(
                    f"{where}: {text} ({days} days) is shorter than the minimum {floor.text} "
                    f"({floor.days} days): {floor.source} "
                    "(the product's assumption, docs/policies.md#retention)"
                )
            if ceiling is not None and days > ceiling.days:
                messages.append(
                    f"{where}: {text} ({days} days) is longer than the maximum {ceiling.text}: "
                    f"{ceiling.source}"
                )
    return messages


def _rules(document: dict[str, Any], *, tenants: Iterable[str] | None = None) -> list[str]:
    messages = []
    classes = sorted(document["classes"])
    if document["default_class"] not in classes:
        messages.append(
            f"default_class: {document['default_class']!r} is not a class (classes: {', '.join(classes)})"
        )
    audits = {values["audit"] for values in document["classes"].values()}
    if len(audits) > 1:
        messages.append(
            f"classes: audit differs between classes ({', '.join(sorted(audits))}): the audit log and its "
            "exported segments hold every tenant's records, so one retention applies to all"
        )
    declared = None if tenants is None else sorted(tenants)
    for tenant, name in (document.get("tenants") or {}).items():
        if name not in classes:
            messages.append(f"tenants.{tenant}: {name!r} is not a class (classes: {', '.join(classes)})")
        if declared is not None and tenant not in declared:
            messages.append(
                f"tenants.{tenant}: unknown tenant (declared in tenants.yaml: {', '.join(declared)})"
            )
    return messages + bound_problems(document)


def _build(document: dict[str, Any], source: Path, **_: object) -> RetentionPolicy:
    return RetentionPolicy(
        source=source,
        default_class=document["default_class"],
        classes={name: dict(values) for name, values in document["classes"].items()},
        tenant_classes=dict(document.get("tenants") or {}),
    )


RETENTION = PolicyFile("retention", "retention policy", build=_build, rules=_rules)


def load_retention_file(path: Path, tenants: Iterable[str] | None = None) -> RetentionPolicy:
    """Load and validate a retention policy file; ``tenants``: the declared tenants to check against.

    :raises PolicyError: the file is invalid, or below a minimum; every problem named.
    """
    return RETENTION.load(path, tenants=tenants)


@cache
def load_retention() -> RetentionPolicy:
    """The deployed retention policy (checked against the deployed tenants), loaded once per process."""
    from include.policies.tenants import all_tenant_ids

    return load_retention_file(RETENTION_FILE, tenants=all_tenant_ids())


def retention_for(kind: RecordKind, tenant: str | None = None) -> Retention:
    """How long ``tenant``'s records of ``kind`` are kept (the deployed policy).

    :param kind: one of :data:`KINDS`.
    :param tenant: the tenant; ``None`` for the platform's own records.
    """
    return load_retention().retention_for(kind, tenant)


def retain_until(kind: RecordKind, tenant: str | None, written_at: datetime) -> datetime:
    """The Object Lock ``RetainUntilDate`` for a record of ``kind`` written at ``written_at``.

    :param written_at: an aware datetime (the write time).
    """
    return written_at + retention_for(kind, tenant).period


def cross_file_problems(
    policy: RetentionPolicy, *, invoice_archive_days: int | None, tenants: Iterable[str]
) -> list[tuple[str, str]]:
    """What other settings must hold for this policy to be true, as ``(file, "<key>: <problem>")``:
    the invoice archive's Object Lock retention (``invoicing.yaml`` ``archive.retention_days``)
    covers every tenant's invoice retention, and the audit export's default retention
    (:data:`include.audit.export.DEFAULT_RETENTION_DAYS`) covers the audit retention."""
    from include.audit.export import DEFAULT_RETENTION_DAYS

    messages = []
    audit = policy.longest("audit")
    if audit.days > DEFAULT_RETENTION_DAYS:
        messages.append(
            (
                "include/audit/export.py",
                f"DEFAULT_RETENTION_DAYS: {DEFAULT_RETENTION_DAYS} is shorter than the "
                f"audit retention {audit.text} ({audit.days} days) in retention.yaml",
            )
        )
    if invoice_archive_days is not None:
        longest = max((policy.retention_for("invoice", t) for t in [None, *tenants]), key=lambda r: r.days)
        if invoice_archive_days < longest.days:
            messages.append(
                (
                    "invoicing.yaml",
                    f"archive.retention_days: {invoice_archive_days} is shorter than the invoice "
                    f"retention {longest.text} ({longest.days} days) of class {longest.tenant_class!r} "
                    "in retention.yaml",
                )
            )
    return messages


# --- applying it to the local stores -------------------------------------------------------------
@dataclass(frozen=True)
class PruneReport:
    """What one pass of :func:`prune_task_logs` removed (or would remove, on a dry run)."""

    folder: str
    keep_days: int
    files: int
    bytes: int
    directories: int
    dry_run: bool


def _task_log_files(folder: Path) -> Iterable[Path]:
    """Airflow's task logs under ``folder``: ``dag_id=*/run_id=*/task_id=*/**/*.log``, never
    following a symbolic link (a link could point anywhere)."""
    for top in sorted(folder.glob("dag_id=*")):
        if top.is_symlink() or not top.is_dir():
            continue
        for path in top.rglob("*.log"):
            if not path.is_symlink() and path.is_file() and not any(p.is_symlink() for p in path.parents):
                yield path


def _remove_empty_directories(folder: Path) -> int:
    removed = 0
    for top in folder.glob("dag_id=*"):
        if top.is_symlink() or not top.is_dir():
            continue
        inner = sorted((d for d in top.rglob("*") if d.is_dir() and not d.is_symlink()), reverse=True)
        for directory in [*inner, top]:
            if not any(directory.iterdir()):
                directory.rmdir()
                removed += 1
    return removed


def prune_task_logs(folder: Path, keep: Retention, now: datetime, *, dry_run: bool = False) -> PruneReport:
    """Delete the task log files under ``folder`` last written more than ``keep`` ago, then the
    run and DAG directories left empty. Only ``dag_id=...`` trees are touched (not the DAG
    processor's or the scheduler's logs).

    :param folder: Airflow's ``[logging] base_log_folder``.
    :param keep: the task-log retention (:meth:`RetentionPolicy.longest` ``("task_log")``: the folder
        holds every tenant's runs).
    :param now: an aware datetime.
    :raises ValueError: ``folder`` is not a directory, is a symbolic link, or is the file system's root.
    """
    if folder.is_symlink() or not folder.is_dir() or folder.resolve() == Path(folder.anchor):
        raise ValueError(f"task log folder {folder}: not a directory of its own; nothing pruned")
    cutoff = (now - keep.period).timestamp()
    files = size = directories = 0
    for path in list(_task_log_files(folder)):
        stat = path.stat()
        if stat.st_mtime < cutoff:
            files, size = files + 1, size + stat.st_size
            if not dry_run:
                path.unlink()
    if not dry_run:
        directories = _remove_empty_directories(folder)
    return PruneReport(str(folder), keep.days, files, size, directories, dry_run)


def prune_airflow_task_logs(dry_run: bool = False) -> dict[str, Any]:
    """The ``platform_retention`` task: prune the task logs of this host's log folder by the policy."""
    from datetime import UTC

    from airflow.configuration import conf

    folder = Path(conf.get("logging", "base_log_folder"))
    report = prune_task_logs(folder, load_retention().longest("task_log"), datetime.now(UTC), dry_run=dry_run)
    return {
        "folder": report.folder,
        "keep_days": report.keep_days,
        "files": report.files,
        "bytes": report.bytes,
        "directories": report.directories,
        "dry_run": report.dry_run,
    }
