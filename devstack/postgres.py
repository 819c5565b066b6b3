"""A project-local PostgreSQL cluster (Debian's packages) under ``.local/<profile>/pgdata``.

The embedded SQLite metadata DB died with "database is locked" under a burst of 30 runs on this
kind of machine; a local PostgreSQL cluster took 200 at once. So the default is PostgreSQL, owned
by the ``postgres`` system user (initdb refuses root), on 127.0.0.1 only.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
from pathlib import Path

from devstack import processes
from devstack.config import HOST, Profile
from devstack.processes import ServiceError

DEBIAN_PG_ROOT = Path("/usr/lib/postgresql")
DB_USER = "airflow"


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


def initialise(profile: Profile, *, fresh: bool) -> None:
    """Create the cluster if needed (``fresh`` wipes it first, as the test session does)."""
    data = profile.pgdata
    if fresh and data.exists():
        stop(profile)
        shutil.rmtree(data)
    if (data / "PG_VERSION").exists():
        return
    data.mkdir(parents=True, mode=0o700)
    _chown_postgres(data)
    subprocess.run(
        _as_owner([str(pg_bin() / "initdb"), "-D", str(data), "-A", "trust", "-U", DB_USER, "-E", "UTF8"]),
        check=True,
        stdout=subprocess.DEVNULL,
    )


def start(profile: Profile) -> None:
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
    _create_database(profile)


def _create_database(profile: Profile) -> None:
    create_database(profile, "airflow")


def create_database(profile: Profile, name: str) -> None:
    """Create database ``name`` (owned by ``airflow``) in the running cluster unless it exists."""
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
        raise ValueError(f"database name must be a lower-case SQL identifier, got {name!r}")
    psql = [
        str(pg_bin() / "psql"),
        "-h",
        HOST,
        "-p",
        str(profile.pg_port),
        "-U",
        DB_USER,
        "-d",
        "postgres",
        "-tAc",
    ]
    exists = subprocess.run(
        [*psql, f"SELECT 1 FROM pg_database WHERE datname='{name}'"],  # noqa: S608 - name checked above
        capture_output=True,
        text=True,
        check=True,
    )
    if exists.stdout.strip() != "1":
        subprocess.run([*psql, f'CREATE DATABASE "{name}"'], check=True, capture_output=True)


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
