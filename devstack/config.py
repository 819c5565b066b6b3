"""Where each profile of the local stack lives: folders and loopback ports."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

REPO_ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(os.environ.get("ORCH_VENV_BIN", REPO_ROOT / ".venv" / "bin"))
HOST = "127.0.0.1"
REGION = "eu-west-1"
# The staff identity store of the devstack (IAM Identity Center in the internal account secops).
STAFF_IDENTITY_STORE_ID = "d-9067c0ffee"


@dataclass(frozen=True)
class Profile:
    name: str
    api_port: int
    pg_port: int
    moto_port: int
    smtp_port: int
    # OpenLDAP (devstack/openldap.py); 0: this profile runs no directory.
    ldap_port: int = 0
    # "local": the embedded default (LocalExecutor). "celery": the distributed setup of issue 9
    # (CeleryExecutor, Redis broker and rate-limit store, CELERY_WORKERS workers).
    executor: str = "local"

    @property
    def root(self) -> Path:
        return REPO_ROOT / ".local" / self.name

    @property
    def airflow_home(self) -> Path:
        return self.root / "airflow"

    @property
    def pgdata(self) -> Path:
        return self.root / "pgdata"

    @property
    def maildir(self) -> Path:
        return self.root / "mail"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def pids(self) -> Path:
        return self.root / "pids"

    @property
    def api_url(self) -> str:
        return f"http://{HOST}:{self.api_port}"

    @property
    def moto_url(self) -> str:
        return f"http://{HOST}:{self.moto_port}"

    @property
    def erp_port(self) -> int:
        """The Business Central stand-in (devstack/standins/erp.py), next to the API port."""
        return self.api_port + 20

    @property
    def redis_port(self) -> int:
        """Redis (devstack/redis.py) of the distributed setup."""
        return self.api_port + 30

    @property
    def mfa_port(self) -> int:
        """privacyIDEA, the MFA server of approval answers (devstack/privacyidea.py). +40 is free: RT
        +10, log servers +13/+14/+16.., scheduler health +15, ERP stand-in +20, Redis +30."""
        return self.api_port + 40

    @property
    def distributed(self) -> bool:
        return self.executor == "celery"

    @property
    def db_url(self) -> str:
        """The metadata DB as its owner ``airflow`` (holds the password: never log it)."""
        secret = quote(self.db_password("airflow"), safe="")
        return f"postgresql+psycopg2://airflow:{secret}@{HOST}:{self.pg_port}/airflow"

    def db_password(self, role: str) -> str:
        """The password of PostgreSQL role ``role`` (devstack/postgres.py), generated once per profile."""
        return self.local_secret(f"postgres-{role}")

    def local_secret(self, name: str, generate: Callable[[], str] | None = None) -> str:
        """A random value generated once per profile (0600 file), e.g. the admin password."""
        path = self.root / "secrets" / name
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            path.write_text(generate() if generate else secrets.token_urlsafe(32))
            path.chmod(0o600)
        return path.read_text().strip()


# The service user privileged steps read approvals as (include/approvals/verify.py), and the
# profile's local secret holding its password.
VERIFIER_USER = "approval-verifier"
VERIFIER_LOCAL_NAME = "approval-verifier"


def _port(var: str, default: int) -> int:
    return int(os.environ.get(var, default))


_TEST_OFFSET = _port("ORCH_TEST_PORT_OFFSET", 0)
EXECUTORS = ("local", "celery")


def _executor(var: str) -> str:
    value = os.environ.get(var, "local")
    if value not in EXECUTORS:
        raise ValueError(f"{var} must be one of {', '.join(EXECUTORS)}; got {value!r}")
    return value


# ORCH_TEST_EXECUTOR=celery runs the test profile as the distributed setup (make test-distributed);
# ORCH_EXECUTOR=celery does the same for `make run`.
_TEST_EXECUTOR = _executor("ORCH_TEST_EXECUTOR")
# Two Celery workers in the distributed setup, both on every queue (devstack/stack.py).
CELERY_WORKERS = ("worker-1", "worker-2")

PROFILES = {
    "run": Profile(
        name="run",
        api_port=_port("ORCH_API_PORT", 8080),
        pg_port=_port("ORCH_PG_PORT", 25432),
        moto_port=_port("ORCH_MOTO_PORT", 5050),
        smtp_port=_port("ORCH_SMTP_PORT", 2525),
        ldap_port=_port("ORCH_LDAP_PORT", 3389),
        executor=_executor("ORCH_EXECUTOR"),
    ),
    # ORCH_TEST_PORT_OFFSET=<n> moves every port of the test profile by n and its folder to
    # .local/test-<n>, so a second test session can run on the same machine (a developer's
    # subset while the full suite runs).
    "test": Profile(
        name=f"test-{_TEST_OFFSET}" if _TEST_OFFSET else "test",
        api_port=18080 + _TEST_OFFSET,
        pg_port=25442 + _TEST_OFFSET,
        moto_port=15050 + _TEST_OFFSET,
        smtp_port=12525 + _TEST_OFFSET,
        ldap_port=13389 + _TEST_OFFSET,
        executor=_TEST_EXECUTOR,
    ),
}


# moto accepts any key; these are its documented dummy credentials.
MOTO_ACCESS_KEY = "testing"
MOTO_SECRET_KEY = "testing"  # noqa: S105 - moto's documented dummy key
