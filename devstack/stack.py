"""Start, watch and stop the whole local stack: ``python -m devstack up|start|stop|status``.

``up`` (what ``make run`` calls) starts everything, prints the UI URL and the login, and stops
everything it started on Ctrl-C. ``start``/``stop`` do the same in two steps (the test session).
"""

from __future__ import annotations

import argparse
import functools
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import requests

from devstack import (
    aws_seed,
    chromium,
    directory_seed,
    invoicing,
    moto_seed,
    openldap,
    postgres,
    privacyidea,
    processes,
    redis,
    request_tracker,
)
from devstack.airflow_env import ADMIN_USER, airflow_env, api_server_env, celery_worker_env
from devstack.config import (
    CELERY_WORKERS,
    HOST,
    PROFILES,
    REGION,
    VENV_BIN,
    VERIFIER_LOCAL_NAME,
    VERIFIER_USER,
    Profile,
)
from devstack.processes import ServiceError
from devstack.request_tracker import RequestTracker
from devstack.standins import jira as jira_standin
from devstack.standins import microsoft as microsoft_standin
from devstack.standins import webhooks

AIRFLOW_COMPONENTS = ("scheduler", "dag-processor", "triggerer", "api-server")
AUX_SERVICES = (
    "moto",
    "smtp-sink",
    "request-tracker",
    invoicing.ERP_SERVICE,
    microsoft_standin.SERVICE,
    webhooks.SERVICE,
    jira_standin.SERVICE,
)
# The distributed setup's Celery workers: worker-1 serves `default` and `platform`, worker-2
# `default`, `platform` and `soc` (as docker/docker-compose.yml), so SOC tasks run on worker-2 only
# and a default-queue task whose worker dies is retried on the other one. (Production gives `soc`
# and `platform` worker sets of their own, each with its own identity: docker/helm/values.yaml.)
WORKER_QUEUES = {"worker-1": "default,platform", "worker-2": "default,platform,soc"}


@dataclass
class Stack:
    profile: Profile
    extra_bundles: list[dict[str, Any]] = field(default_factory=list)
    # Where each worker's log was when it was last started (worker_ready reads past it).
    _ready_offset: dict[str, int] = field(default_factory=dict, repr=False)

    @property
    def env(self) -> dict[str, str]:
        return airflow_env(self.profile, extra_bundles=self.extra_bundles)

    @property
    def audit_dsn(self) -> str:
        """The audit store as the ``audit_store`` connection names it: ``audit_writer`` (a secret)."""
        return postgres.dsn(self.profile, postgres.AUDIT_WRITER, "audit")

    @property
    def audit_reader_dsn(self) -> str:
        """The audit store as ``audit_reader`` (SELECT only): ``audit trace``, ``audit verify``."""
        return postgres.dsn(self.profile, postgres.AUDIT_READER, "audit")

    @property
    def workers(self) -> tuple[str, ...]:
        """The Celery workers' service names (none with the embedded LocalExecutor)."""
        return tuple(f"celery-{name}" for name in CELERY_WORKERS) if self.profile.distributed else ()

    @property
    def components(self) -> tuple[str, ...]:
        """Every Airflow process of this profile, in start order."""
        return (*AIRFLOW_COMPONENTS, *self.workers)

    @property
    def services(self) -> tuple[str, ...]:
        """Every process started by PID file (PostgreSQL apart), for status and liveness."""
        extra = (redis.SERVICE_NAME,) if self.profile.distributed else ()
        return (*AUX_SERVICES, openldap.SERVICE_NAME, privacyidea.SERVICE_NAME, *extra, *self.components)

    @property
    def admin_password(self) -> str:
        return self.profile.local_secret("admin-password")

    def _log(self, message: str) -> None:
        print(f"[stack:{self.profile.name}] {message}", flush=True)

    def _run(
        self, what: str, argv: list[str], timeout: float = 300, env: dict[str, str] | None = None
    ) -> str:
        result = subprocess.run(
            argv,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise ServiceError(
                f"{what} failed (exit {result.returncode}):\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
            )
        return result.stdout

    def start(self, *, fresh: bool = False) -> None:
        """Start every service; ``fresh`` wipes the database and mail first (tests)."""
        started = time.monotonic()
        self.profile.root.mkdir(parents=True, exist_ok=True)
        if fresh:
            self.stop(quiet=True)
            for folder in (
                self.profile.maildir,
                self.profile.airflow_home,
                self.profile.logs,
                self.profile.root / "dag_bundles",
                self.profile.root / "results",
                self.profile.root / "terraform",  # per-tenant state and plan workspaces
            ):
                shutil.rmtree(folder, ignore_errors=True)
        postgres.ensure_installed()
        postgres.initialise(self.profile, fresh=fresh)
        postgres.start(self.profile)
        # The connectors' shared rate-limit buckets live in their own database of the cluster.
        postgres.create_database(self.profile, "ratelimit")
        # The audit trail's database: created and given its append-only schema (owned by
        # audit_owner, writers INSERT + SELECT) before any component can write (a deployment runs
        # the same step after `airflow db migrate`).
        postgres.create_database(self.profile, "audit")
        postgres.setup_audit_schema(self.profile)
        self._log(
            f"PostgreSQL on {HOST}:{self.profile.pg_port} (password auth; roles and passwords in "
            f"{self.profile.root / 'secrets'}, postgres-<role>)"
        )
        openldap.ensure_installed()
        openldap.initialise(self.profile, fresh=fresh)
        openldap.start(self.profile)
        self._log(f"OpenLDAP on {openldap.url(self.profile)} ({openldap.SUFFIX})")
        # The people the walk-through logs in as (directory login, include/auth/security.py).
        people = directory_seed.seed(self.profile)
        self._log(
            "directory people (log in with uid and the password in the file):\n  " + "\n  ".join(people)
        )
        self._start_mfa_server(fresh=fresh)
        self._start_request_tracker(fresh=fresh)
        # The workers print the evidence packs' report.pdf with it (include/evidence/pdf.py).
        if installed := chromium.ensure_installed():
            self._log(f"Chromium installed from Debian in {installed:.0f}s (evidence report PDFs)")
        self._start_moto()
        self._start_smtp_sink()
        self._start_erp_standin()
        self._start_webhooks_standin()
        self._start_microsoft_standin()
        self._start_jira_standin()
        if self.profile.distributed:
            redis.ensure_installed()
            redis.start(self.profile, fresh=fresh)
            self._log(f"Redis on {HOST}:{self.profile.redis_port} (Celery broker, rate-limit store)")
        self._prepare_airflow()
        for component in AIRFLOW_COMPONENTS:
            self._start_process(component, [str(VENV_BIN / "airflow"), component])
        for index, name in enumerate(CELERY_WORKERS if self.profile.distributed else ()):
            self.start_worker(name, index)
        began = time.monotonic()
        processes.wait_until(
            self._healthy,
            what="Airflow API server and components",
            timeout=180,
            log=self.profile.logs / "api-server.log",
        )
        for name in self.workers:
            processes.wait_until(
                functools.partial(self.worker_ready, name),
                what=f"Celery {name}",
                timeout=120,
                log=self.profile.logs / f"{name}.log",
            )
        self._log(
            f"Airflow healthy {time.monotonic() - began:.1f}s after start; stack ready in "
            f"{time.monotonic() - started:.1f}s"
        )

    def _start_process(self, name: str, argv: list[str]) -> None:
        if processes.running_pid(name, pids_dir=self.profile.pids):
            return
        env = {**self.env, **api_server_env(self.profile)} if name == "api-server" else self.env
        processes.start(name, argv, pids_dir=self.profile.pids, logs_dir=self.profile.logs, env=env)

    def start_component(self, name: str) -> None:
        """Start one Airflow component again (``scheduler``...), e.g. after a fault test killed it."""
        if name not in AIRFLOW_COMPONENTS:
            raise ValueError(f"{name!r} is not one of {', '.join(AIRFLOW_COMPONENTS)}")
        self._start_process(name, [str(VENV_BIN / "airflow"), name])

    def start_worker(self, name: str, index: int | None = None) -> None:
        """Start (or restart, after a fault test killed it) Celery worker ``name`` (``worker-1``)."""
        index = CELERY_WORKERS.index(name) if index is None else index
        service = f"celery-{name}"
        if processes.running_pid(service, pids_dir=self.profile.pids):
            return
        log = self.profile.logs / f"{service}.log"
        self._ready_offset[service] = log.stat().st_size if log.exists() else 0
        argv = [str(VENV_BIN / "airflow"), "celery", "worker", "--queues", WORKER_QUEUES[name]]
        argv += ["--celery-hostname", f"{name}@%h", "--without-mingle", "--without-gossip"]
        processes.start(
            service,
            argv,
            pids_dir=self.profile.pids,
            logs_dir=self.profile.logs,
            env={**self.env, **celery_worker_env(self.profile, index)},
        )

    def worker_ready(self, service: str) -> bool:
        """Celery logs "<name>@<host> ready." once it consumes; only this start's lines count."""
        log = self.profile.logs / f"{service}.log"
        if not log.exists() or processes.running_pid(service, pids_dir=self.profile.pids) is None:
            return False
        with log.open("rb") as handle:
            handle.seek(self._ready_offset.get(service, 0))
            return b" ready." in handle.read()

    def _start_moto(self) -> None:
        self._start_process(
            # moto_server plus identitystore UpdateUser, which moto lacks (see the module).
            "moto",
            [
                str(VENV_BIN / "python"),
                "-m",
                "devstack.standins.moto_server",
                "-H",
                HOST,
                "-p",
                str(self.profile.moto_port),
            ],
        )
        processes.wait_until(
            lambda: processes.port_open(HOST, self.profile.moto_port),
            what="moto server",
            timeout=60,
            log=self.profile.logs / "moto.log",
        )
        names = moto_seed.seed(self.profile)
        tenant_items = aws_seed.seed_capability_roles(self.profile.moto_url, REGION)
        aws_seed.seed_identity_center(self.profile.moto_url, REGION)
        aws_seed.seed_intake_queues(self.profile.moto_url, REGION)
        self._log(
            f"moto server on {self.profile.moto_url}, {len(names)} secrets seeded, "
            f"{len(tenant_items)} capability roles/secrets in tenant accounts"
        )

    def _start_mfa_server(self, *, fresh: bool) -> None:
        """privacyIDEA (devstack/privacyidea.py): after OpenLDAP, its user store; before the moto
        seed, whose mfa_default connection carries the validate key."""
        installed = privacyidea.ensure_installed()
        privacyidea.initialise(self.profile, fresh=fresh)
        ready = privacyidea.start(self.profile)
        # Every seeded person gets a TOTP token (approval answers need one); seeds kept for the tests.
        enrolled = privacyidea.enrol_missing(self.profile, directory_seed.SEEDED)
        secrets_dir = self.profile.root / "secrets"
        self._log(
            f"privacyIDEA (MFA) on {privacyidea.url(self.profile)}, healthy {ready:.1f}s after start"
            + (f", venv built in {installed:.0f}s" if installed else "")
            + f"; admin {privacyidea.ADMIN_USER}, password in {secrets_dir / privacyidea.ADMIN_SECRET}; "
            f"{len(enrolled)} TOTP token(s) enrolled now, seeds in {privacyidea.seeds_dir(self.profile)}"
        )

    def _start_request_tracker(self, *, fresh: bool) -> None:
        # Before the moto seed: the rt_default connection carries RT's token.
        request_tracker.ensure_installed()
        rt = RequestTracker(self.profile)
        rt.start()
        if fresh:
            rt.reset()
        self._log(f"Request Tracker 5 on {rt.url}")

    def _start_smtp_sink(self) -> None:
        self._start_process(
            "smtp-sink",
            [
                sys.executable,
                "-m",
                "devstack.standins.smtp",
                "--host",
                HOST,
                "--port",
                str(self.profile.smtp_port),
                "--maildir",
                str(self.profile.maildir),
            ],
        )
        processes.wait_until(
            lambda: processes.port_open(HOST, self.profile.smtp_port),
            what="SMTP sink",
            timeout=30,
            log=self.profile.logs / "smtp-sink.log",
        )
        self._log(f"SMTP sink on {HOST}:{self.profile.smtp_port}, mail kept in {self.profile.maildir}")

    def _start_erp_standin(self) -> None:
        """The Business Central stand-in and the PSA export bucket (devstack/invoicing.py)."""
        self._start_process(invoicing.ERP_SERVICE, invoicing.erp_standin_argv(self.profile))
        processes.wait_until(
            lambda: processes.port_open(HOST, self.profile.erp_port),
            what="Business Central stand-in",
            timeout=30,
            log=self.profile.logs / f"{invoicing.ERP_SERVICE}.log",
        )
        bucket = invoicing.seed_psa_exports(self.profile)
        self._log(
            f"Business Central stand-in on {invoicing.erp_base_url(self.profile)}; PSA exports in "
            f"s3://{bucket} (sample {invoicing.SAMPLE_EXPORT_KEY})"
        )

    def _start_microsoft_standin(self) -> None:
        """Entra ID / Graph / Defender of the customer tenants over HTTPS (devstack/standins/microsoft.py):
        its CA and certificate are made in the profile's run folder, its tenants' app connections are in
        moto (devstack/moto_seed.py)."""
        microsoft_standin.ensure_certificates(microsoft_standin.tls_dir(self.profile))
        self._start_process(microsoft_standin.SERVICE, microsoft_standin.standin_argv(self.profile))
        processes.wait_until(
            lambda: processes.port_open(HOST, microsoft_standin.port(self.profile)),
            what="Microsoft stand-in",
            timeout=30,
            log=self.profile.logs / f"{microsoft_standin.SERVICE}.log",
        )
        self._log(f"Entra ID / Graph / Defender stand-in on {microsoft_standin.base_url(self.profile)}")

    def _start_jira_standin(self) -> None:
        """The customers' Jira Service Management sites (devstack/standins/jira.py): one project and
        account per customer; the Jira tenants' credentials are in their accounts (devstack/moto_seed.py)."""
        self._start_process(jira_standin.SERVICE, jira_standin.standin_argv(self.profile))
        processes.wait_until(
            lambda: processes.port_open(HOST, jira_standin.port(self.profile)),
            what="Jira stand-in",
            timeout=30,
            log=self.profile.logs / f"{jira_standin.SERVICE}.log",
        )
        self._log(
            f"Jira Service Management stand-in on {jira_standin.base_url(self.profile)} (issues: /_issues)"
        )

    def _start_webhooks_standin(self) -> None:
        """The Teams webhook + PagerDuty Events v2 stand-in of the approval channels."""
        self._start_process(webhooks.SERVICE, webhooks.standin_argv(self.profile))
        processes.wait_until(
            lambda: processes.port_open(HOST, webhooks.port(self.profile)),
            what="Teams/PagerDuty stand-in",
            timeout=30,
            log=self.profile.logs / f"{webhooks.SERVICE}.log",
        )
        self._log(f"Teams/PagerDuty stand-in on {webhooks.base_url(self.profile)} (records: /_records)")

    def _prepare_airflow(self) -> None:
        airflow = str(VENV_BIN / "airflow")
        began = time.monotonic()
        self._run("airflow db migrate", [airflow, "db", "migrate"], timeout=600)
        self._log(f"metadata DB migrated in {time.monotonic() - began:.1f}s")
        self._run(
            "bootstrap (pools, roles, admin)",
            [sys.executable, "-m", "devstack.bootstrap"],
            env={
                "ORCH_ADMIN_USER": ADMIN_USER,
                "ORCH_ADMIN_PASSWORD": self.admin_password,
                "ORCH_VERIFIER_USER": VERIFIER_USER,
                "ORCH_VERIFIER_PASSWORD": self.profile.local_secret(VERIFIER_LOCAL_NAME),
            },
        )
        self._log("pools/roles synced from policy, admin and approval verifier users present")

    def _healthy(self) -> bool:
        response = requests.get(f"{self.profile.api_url}/api/v2/monitor/health", timeout=5)
        if response.status_code != 200:
            return False
        health = response.json()
        return all(
            health.get(part, {}).get("status") == "healthy"
            for part in ("metadatabase", "scheduler", "triggerer", "dag_processor")
        )

    def dead_components(self) -> list[str]:
        pids = self.profile.pids
        return [name for name in self.services if processes.running_pid(name, pids_dir=pids) is None]

    def stop(self, *, quiet: bool = False) -> None:
        """Stop everything this profile started, each by its own PID."""
        # Airflow's processes together, then the services they use, together: each group waits
        # only as long as its slowest member (the end of a bench run: 34 s one by one, 22 s so).
        for group in (tuple(reversed(self.components)), AUX_SERVICES):
            for name in processes.stop_many(group, pids_dir=self.profile.pids):
                if not quiet:
                    self._log(f"stopped {name}")
        if privacyidea.stop(self.profile) and not quiet:
            self._log("stopped privacyIDEA")
        if openldap.stop(self.profile) and not quiet:
            self._log("stopped OpenLDAP")
        if redis.stop(self.profile) and not quiet:
            self._log("stopped Redis")
        if postgres.stop(self.profile) and not quiet:
            self._log("stopped PostgreSQL")

    def status(self) -> dict[str, int | None]:
        state: dict[str, int | None] = {
            name: processes.running_pid(name, pids_dir=self.profile.pids) for name in self.services
        }
        state["postgres"] = (
            postgres.postmaster_pid(self.profile) if postgres.is_running(self.profile) else None
        )
        return state


@contextmanager
def running(stack: Stack, *, fresh: bool = False) -> Iterator[Stack]:
    try:
        stack.start(fresh=fresh)
        yield stack
    finally:
        stack.stop()


def _up(stack: Stack) -> int:
    stop_requested = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop_requested.set())
    with running(stack):
        print(
            f"\nAirflow UI: {stack.profile.api_url}\n"
            f"Log in as a directory person: uid and the password in "
            f"{stack.profile.root / 'secrets' / 'people'}/<uid> (people listed above; docs/auth.md)\n"
            f"Break-glass (every use audited): {ADMIN_USER} / {stack.admin_password}\n"
            f"(password kept in {stack.profile.root / 'secrets' / 'admin-password'})\n"
            f"Mail sent by workflows: {stack.profile.maildir}\n"
            f"Logs: {stack.profile.logs}\nPress Ctrl-C to stop everything.\n",
            flush=True,
        )
        while not stop_requested.wait(5):
            dead = stack.dead_components()
            if dead:
                print(f"component(s) died: {', '.join(dead)}; see {stack.profile.logs}", file=sys.stderr)
                return 1
        print("stopping...", flush=True)
    return 0


def _code(stack: Stack, uid: str | None) -> int:
    """The current one-time code of a seeded person's TOTP token: the local stand-in for their phone
    (a real approver reads it from the authenticator app `include.cli mfa enrol` set up)."""
    import pyotp

    if not uid:
        print("python -m devstack code <uid>: whose code (e.g. cleo-cloudlead)?", file=sys.stderr)
        return 2
    totp = pyotp.TOTP(privacyidea.seed(stack.profile, uid))
    left = totp.interval - int(time.time()) % totp.interval
    print(f"{totp.now()}  (valid for {left}s more, then the next one)")
    return 0


def _handle(args: argparse.Namespace) -> int:
    stack = Stack(PROFILES[args.profile])
    if args.action == "up":
        return _up(stack)
    if args.action == "code":
        return _code(stack, args.uid)
    if args.action == "start":
        stack.start(fresh=args.fresh)
    elif args.action == "stop":
        stack.stop()
    else:
        for name, pid in stack.status().items():
            print(f"{name:14} {'running pid ' + str(pid) if pid else 'stopped'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devstack",
        description="run the local stack (PostgreSQL, moto, SMTP sink, stand-ins, Airflow)",
    )
    parser.add_argument("action", choices=("up", "start", "stop", "status", "code"))
    parser.add_argument("uid", nargs="?", help="code: the seeded person whose one-time code to show")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="run")
    parser.add_argument("--fresh", action="store_true", help="wipe the database and mail first")
    return parser


def main(argv: list[str] | None = None) -> int:
    return _handle(build_parser().parse_args(argv))
