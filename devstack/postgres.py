"""A project-local PostgreSQL cluster (Debian's packages) under ``.local/<profile>/pgdata``.

The embedded SQLite metadata DB died with "database is locked" under a burst of 30 runs on this
kind of machine; a local PostgreSQL cluster took 200 at once. So the default is PostgreSQL, owned
by the ``postgres`` system user (initdb refuses root), on 127.0.0.1 only.

Least privilege (issue 19, docs/deployment.md "Database roles"): password (scram-sha-256) auth on
the socket and on 127.0.0.1, no ``trust`` line; the superuser ``orch_admin`` is for this module's
set-up only. Every other role owns, or may use, one database:

- ``airflow``: owner of the metadata database ``airflow``;
- ``ratelimit``: owner of ``ratelimit`` (the connectors' shared buckets);
- ``audit_owner`` (NOLOGIN): owner of ``audit`` and its tables (:func:`setup_audit_schema`);
- ``audit_writer``: INSERT and SELECT on the audit tables; ``audit_reader``: SELECT.

Passwords are generated once per profile (``profile.local_secret``), so a restarted stack reuses
them; only SCRAM verifiers computed here reach the server (never the password in a statement).
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from devstack import processes
from devstack.config import HOST, Profile
from devstack.processes import ServiceError

DEBIAN_PG_ROOT = Path("/usr/lib/postgresql")

ADMIN_ROLE = "orch_admin"
DB_USER = "airflow"
"""The metadata database's owner, the role of every Airflow component."""
RATELIMIT_ROLE = "ratelimit"
AUDIT_OWNER = "audit_owner"
AUDIT_WRITER = "audit_writer"
AUDIT_READER = "audit_reader"


@dataclass(frozen=True)
class Database:
    """A database of the cluster: its owner and the other roles that may connect to it."""

    name: str
    owner: str
    users: tuple[str, ...] = ()


DATABASES = (
    Database("airflow", DB_USER),
    Database("ratelimit", RATELIMIT_ROLE),
    Database("audit", AUDIT_OWNER, (AUDIT_WRITER, AUDIT_READER)),
)
LOGIN_ROLES = (DB_USER, RATELIMIT_ROLE, AUDIT_WRITER, AUDIT_READER)
"""The roles that log in with a password; ``audit_owner`` never logs in."""
_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*")


def _installed_bin() -> Path | None:
    """The newest Debian/Ubuntu PostgreSQL server binaries (15 on Debian 12), or ORCH_PGBIN."""
    if os.environ.get("ORCH_PGBIN"):
        return Path(os.environ["ORCH_PGBIN"])
    candidates = [p.parent for p in DEBIAN_PG_ROOT.glob("*/bin/initdb")]
    return max(candidates, key=lambda p: int(p.parent.name), default=None)


def pg_bin() -> Path:
    found = _installed_bin()
    if found is None:
        raise ServiceError("PostgreSQL server binaries not found under /usr/lib/postgresql")
    return found


def ensure_installed() -> None:
    """Install the distribution's PostgreSQL server if missing (as root, or through sudo)."""
    if _installed_bin() is not None:
        return
    packages = ("postgresql", "postgresql-client")
    prefix = processes.root_prefix("PostgreSQL", packages)
    processes.apt_install(prefix, packages, {**os.environ, "DEBIAN_FRONTEND": "noninteractive"})


def _as_owner(argv: list[str]) -> list[str]:
    """PostgreSQL will not run as root: run its tools as the ``postgres`` user when we are root."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *argv]
    return argv


def _chown_postgres(path: Path) -> None:
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(path, user.pw_uid, user.pw_gid)


def check_identifier(name: str, what: str) -> str:
    """``name`` if it is a lower-case SQL identifier (roles and databases are quoted as such)."""
    if not _IDENTIFIER.fullmatch(name):
        raise ValueError(f"{what} must be a lower-case SQL identifier, got {name!r}")
    return name


def password(profile: Profile, role: str) -> str:
    """Role ``role``'s password, generated once per profile (a secret: never log it)."""
    return profile.db_password(check_identifier(role, "role name"))


def dsn(profile: Profile, role: str, database: str, *, driver: str = "") -> str:
    """``postgresql[+driver]://role:password@127.0.0.1:port/database`` (holds the password).

    :param driver: SQLAlchemy's driver suffix (``psycopg2``), empty for a libpq URL.
    """
    scheme = f"postgresql+{driver}" if driver else "postgresql"
    secret = quote(password(profile, role), safe="")
    return (
        f"{scheme}://{role}:{secret}@{HOST}:{profile.pg_port}/{check_identifier(database, 'database name')}"
    )


def admin_dsn(profile: Profile, database: str = "postgres") -> str:
    """The superuser's URL: devstack set-up and tests that prove refusals, nothing else."""
    return dsn(profile, ADMIN_ROLE, database)


def uses_trust(hba: str) -> bool:
    """Whether a pg_hba.conf text lets anyone in without a password (a cluster from before issue 19)."""
    for line in hba.splitlines():
        fields = line.split("#", 1)[0].split()
        if fields and fields[-1] == "trust":
            return True
    return False


def initialise(profile: Profile, *, fresh: bool) -> None:
    """Create the cluster if needed (``fresh`` wipes it first, as the test session does).

    :raises ServiceError: the existing cluster still lets anyone in (``trust``): it predates the
        database roles; the message says how to re-create it.
    """
    data = profile.pgdata
    if fresh and data.exists():
        stop(profile)
        shutil.rmtree(data)
    if (data / "PG_VERSION").exists():
        hba = data / "pg_hba.conf"
        if uses_trust(hba.read_text()):
            raise ServiceError(
                f"the PostgreSQL cluster in {data} was created with trust auth (before the database "
                f"roles of docs/deployment.md): stop the stack and delete that folder (its data goes) "
                f"or start with --fresh, to re-create it with passwords"
            )
        return
    data.mkdir(parents=True, mode=0o700)
    _chown_postgres(data)
    # initdb reads the superuser's password from a file only the server's user can read.
    with tempfile.NamedTemporaryFile("w", dir=data.parent, prefix=".pwfile-", delete=True) as pwfile:
        pwfile.write(password(profile, ADMIN_ROLE))
        pwfile.flush()
        _chown_postgres(Path(pwfile.name))
        argv = [str(pg_bin() / "initdb"), "-D", str(data), "-U", ADMIN_ROLE, f"--pwfile={pwfile.name}"]
        argv += ["--auth-host=scram-sha-256", "--auth-local=scram-sha-256", "-E", "UTF8"]
        subprocess.run(_as_owner(argv), check=True, stdout=subprocess.DEVNULL)


def start(profile: Profile) -> None:
    """Start the cluster, then make sure the roles and the metadata database exist."""
    data = profile.pgdata
    if is_running(profile):
        return
    options = (
        f"-k {data} -p {profile.pg_port} -h {HOST} -c max_connections=300 "
        # Durability of a local demo/test database is not worth a flush per commit.
        "-c synchronous_commit=off -c fsync=off -c full_page_writes=off"
    )
    result = subprocess.run(
        _as_owner(
            [
                str(pg_bin() / "pg_ctl"),
                "-D",
                str(data),
                "-o",
                options,
                "-l",
                str(data / "server.log"),
                "-w",
                "-t",
                "60",
                "start",
            ]
        ),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        log = (
            (data / "server.log").read_text(errors="replace")[-3000:]
            if (data / "server.log").exists()
            else ""
        )
        raise ServiceError(
            f"PostgreSQL did not start on {HOST}:{profile.pg_port}: {result.stderr.strip()}\n{log}"
        )
    ensure_roles(profile)
    create_database(profile, "airflow")


@contextmanager
def admin_connection(profile: Profile, database: str = "postgres") -> Iterator[Any]:
    """An autocommit psycopg connection as ``orch_admin`` (CREATE DATABASE refuses a transaction)."""
    import psycopg

    with psycopg.connect(admin_dsn(profile, database), autocommit=True, connect_timeout=10) as conn:
        yield conn


def role_attributes(role: str) -> str:
    """The attributes ``role`` must have: nothing beyond logging in (audit_owner: not even that)."""
    login = "NOLOGIN" if role == AUDIT_OWNER else "LOGIN"
    return f"{login} NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"


def database_grants(database: Database) -> list[str]:
    """Who may connect to ``database``: its owner and ``database.users``, not PUBLIC."""
    name = check_identifier(database.name, "database name")
    statements = [f'REVOKE ALL ON DATABASE "{name}" FROM PUBLIC']
    statements += [
        f'GRANT CONNECT ON DATABASE "{name}" TO "{check_identifier(user, "role name")}"'
        for user in database.users
    ]
    return statements


def ensure_roles(profile: Profile) -> None:
    """Create (or bring back in line) every role of :data:`LOGIN_ROLES` plus ``audit_owner``.

    Passwords are set as SCRAM verifiers computed by libpq, so no statement (nor the server log
    of a failed one) ever carries a password.
    """
    with admin_connection(profile) as conn:
        for role in (*LOGIN_ROLES, AUDIT_OWNER):
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
            verb = "ALTER" if exists else "CREATE"
            statement = f'{verb} ROLE "{check_identifier(role, "role name")}" {role_attributes(role)}'
            if role != AUDIT_OWNER:
                verifier = conn.pgconn.encrypt_password(
                    password(profile, role).encode(), role.encode(), b"scram-sha-256"
                ).decode()
                statement += f" PASSWORD '{verifier}'"
            conn.execute(statement)
        # The maintenance databases are the superuser's.
        for name in ("postgres", "template1"):
            conn.execute(f'REVOKE ALL ON DATABASE "{name}" FROM PUBLIC')


def create_database(profile: Profile, name: str, *, owner: str | None = None) -> None:
    """Create database ``name`` unless it exists; only its owner and the roles :data:`DATABASES`
    names may connect to it.

    :param owner: the owner of a database :data:`DATABASES` does not list (default ``airflow``:
        test databases); the listed ones always get their own.
    """
    check_identifier(name, "database name")
    known = {database.name: database for database in DATABASES}
    if name in known and owner not in (None, known[name].owner):
        raise ValueError(f"database {name!r} is owned by {known[name].owner!r}, not {owner!r}")
    database = known.get(name) or Database(name, check_identifier(owner or DB_USER, "role name"))
    with admin_connection(profile) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            conn.execute(f'CREATE DATABASE "{name}" OWNER "{database.owner}"')
        for statement in database_grants(database):
            conn.execute(statement)


def setup_audit_schema(profile: Profile) -> None:
    """The audit tables, created by ``audit_owner`` (through the superuser's SET ROLE), then
    INSERT + SELECT for ``audit_writer`` and SELECT for ``audit_reader``."""
    from include.audit.store import AuditStore

    with AuditStore(admin_dsn(profile, "audit")) as audit:
        audit.ensure_schema(owner=AUDIT_OWNER, writers=(AUDIT_WRITER,), readers=(AUDIT_READER,))


def postmaster_pid(profile: Profile) -> int | None:
    pid_path = profile.pgdata / "postmaster.pid"
    if not pid_path.exists():
        return None
    return int(pid_path.read_text().splitlines()[0])


def is_running(profile: Profile) -> bool:
    pid = postmaster_pid(profile)
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def stop(profile: Profile) -> bool:
    """Stop the cluster by its postmaster PID (``pg_ctl stop`` reads it from postmaster.pid)."""
    if not is_running(profile):
        return False
    subprocess.run(
        _as_owner([str(pg_bin() / "pg_ctl"), "-D", str(profile.pgdata), "-m", "fast", "-w", "stop"]),
        check=False,
        capture_output=True,
    )
    return True
