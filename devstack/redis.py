"""A project-local Redis (Debian's ``redis-server``) under ``.local/<profile>/redis``: the Celery
broker and the shared rate-limit store of the distributed setup (issue 9).

It listens on ``127.0.0.1:<profile.redis_port>`` only, with a password (random, generated once per
profile into ``.local/<profile>/secrets/redis-password``, mode 0600) and protected mode on. The
append-only file is on (``appendfsync everysec``): a broker restart keeps the queued Celery
messages, as ElastiCache with persistence does, so a Redis outage delays work and loses none. RDB
snapshots are off (the AOF is the record). ``redis-server`` runs in the foreground as a service of
this stack (PID in ``.local/<profile>/pids/redis.pid``, log in ``.local/<profile>/logs/redis.log``);
SIGTERM makes it flush the AOF and exit. The config file holds the password, so it is written 0600.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

from devstack import processes
from devstack.config import HOST, Profile
from devstack.processes import ServiceError

PACKAGES = ("redis-server",)
REDIS_SERVER = Path("/usr/bin/redis-server")
SERVICE_NAME = "redis"
PASSWORD_FILE = "redis-password"  # noqa: S105 - the name of the file, not a password
DEBIAN_PIDFILE = Path("/run/redis/redis-server.pid")
START_TIMEOUT = 30.0
# Database numbers: Celery's broker and the connectors' rate-limit buckets stay apart.
BROKER_DB = 0
RATELIMIT_DB = 1


def home(profile: Profile) -> Path:
    return profile.root / "redis"


def password(profile: Profile) -> str:
    return profile.local_secret(PASSWORD_FILE)


def url(profile: Profile, db: int = BROKER_DB) -> str:
    """``redis://:<password>@127.0.0.1:<port>/<db>`` (a secret: never log it)."""
    return f"redis://:{quote(password(profile), safe='')}@{HOST}:{profile.redis_port}/{db}"


def ratelimit_connection(profile: Profile) -> dict[str, object]:
    """The Airflow connection ``ratelimit_store`` when the buckets live in Redis."""
    return {
        "conn_type": "redis",
        "host": HOST,
        "port": profile.redis_port,
        "password": password(profile),
        "extra": {"db": RATELIMIT_DB},
    }


# --- installation ------------------------------------------------------------------------------
def is_installed() -> bool:
    return REDIS_SERVER.exists() and shutil.which("redis-cli") is not None


def _stop_system_redis(prefix: list[str]) -> None:
    """If the package started Debian's own redis-server anyway, stop that one, by the PID it wrote."""
    if not DEBIAN_PIDFILE.exists():
        return
    try:
        pid = int(DEBIAN_PIDFILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    if processes.is_running(pid):
        subprocess.run([*prefix, "kill", "-TERM", str(pid)], check=False)


def ensure_installed() -> float:
    """Install redis-server from Debian if missing, starting no daemon; return seconds spent."""
    if is_installed():
        return 0.0
    began = time.monotonic()
    prefix = processes.root_prefix("Redis", PACKAGES)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    with processes.services_kept_down(prefix):
        processes.apt_install(prefix, PACKAGES, env)
    _stop_system_redis(prefix)
    if not is_installed():
        raise ServiceError(f"installing {' '.join(PACKAGES)} did not leave redis-server installed")
    return time.monotonic() - began


# --- the server --------------------------------------------------------------------------------
def config(profile: Profile) -> str:
    return "\n".join(
        [
            f"bind {HOST}",
            f"port {profile.redis_port}",
            "protected-mode yes",
            f'requirepass "{password(profile)}"',
            "daemonize no",
            'logfile ""',
            f'dir "{home(profile)}"',
            'save ""',
            "appendonly yes",
            "appendfsync everysec",
            # Celery and the rate limiter only: no module loading, no CONFIG from clients.
            'rename-command CONFIG ""',
            "",
        ]
    )


def write_config(profile: Profile, *, fresh: bool) -> Path:
    if fresh:
        shutil.rmtree(home(profile), ignore_errors=True)
    home(profile).mkdir(parents=True, exist_ok=True, mode=0o700)
    path = home(profile) / "redis.conf"
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(config(profile))
    return path


def ping(profile: Profile, timeout: float = 1.0) -> bool:
    """True when the server answers PING with this profile's password."""
    import redis

    client = redis.Redis(
        host=HOST, port=profile.redis_port, password=password(profile), socket_timeout=timeout
    )
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def start(profile: Profile, *, fresh: bool = False) -> None:
    """Start redis-server on 127.0.0.1 only; nothing to do when it already runs."""
    if is_running(profile):
        return
    if not 0 < profile.redis_port < 65536:
        raise ServiceError(f"profile {profile.name} has no usable redis_port ({profile.redis_port})")
    if processes.port_open(HOST, profile.redis_port):
        raise ServiceError(f"{HOST}:{profile.redis_port} is taken by another process; Redis not started")
    conf = write_config(profile, fresh=fresh)
    process = processes.start(
        SERVICE_NAME, [str(REDIS_SERVER), str(conf)], pids_dir=profile.pids, logs_dir=profile.logs
    )
    log = profile.logs / f"{SERVICE_NAME}.log"
    deadline = time.monotonic() + START_TIMEOUT
    while not ping(profile):
        if process.poll() is not None:
            processes.stop(SERVICE_NAME, pids_dir=profile.pids)
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:]) if log.exists() else ""
            raise ServiceError(f"redis-server exited with {process.returncode}; last lines of {log}:\n{tail}")
        if time.monotonic() > deadline:
            stop(profile)
            raise ServiceError(
                f"Redis not answering on {HOST}:{profile.redis_port} after {START_TIMEOUT:.0f}s; see {log}"
            )
        time.sleep(0.05)


def is_running(profile: Profile) -> bool:
    return processes.running_pid(SERVICE_NAME, pids_dir=profile.pids) is not None


def stop(profile: Profile) -> bool:
    """Stop this profile's redis-server by its own PID (SIGTERM: it flushes the AOF first)."""
    return processes.stop(SERVICE_NAME, pids_dir=profile.pids)
