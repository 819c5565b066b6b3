"""privacyIDEA, the MFA server of the local stack (issue 20): approvers' TOTP tokens, checked for
every approval answer (:class:`include.connectors.mfa.MfaHook`).

Installation: privacyIDEA 3.14 from PyPI in a venv of its own, ``.local/privacyidea-venv`` (it needs
``ldap3<2.9``; the project pins 2.9.1), shared by every profile, built with the Python the project's
venv was made from, from the lock ``devstack/privacyidea-requirements.txt`` (``pip install
--no-deps``). A stamp in the venv holds the lock's hash: a changed lock rebuilds it (about 30 s).

Per profile, ``.local/<profile>/privacyidea`` (0700): ``pi.cfg`` (0600; it holds ``SECRET_KEY``,
which signs admin JWTs and the validate API key, and ``PI_PEPPER``, both local secrets of the
profile), ``enckey`` (encrypts the token seeds; it belongs to the sqlite DB: one without the other is
useless), the audit signing keys, the sqlite DB and ``wsgi.py``. privacyIDEA's log is
``.local/<profile>/logs/privacyidea-app.log`` (INFO: no request bodies, so no codes, no seeds);
gunicorn's output ``logs/privacyidea.log``. gunicorn runs one sync worker (replay state lives in
the one DB), on ``127.0.0.1:<profile.mfa_port>`` only, without its control socket, PID in
``pids/privacyidea.pid``; SIGTERM stops it.

Configuration (:func:`configure`, at every start, idempotent), through the admin API:

- an LDAP resolver on the profile's OpenLDAP as the read-only ``orchestrator-reader`` (people under
  ``ou=people``, login attribute ``uid``, user id ``entryUUID``), realm ``secops`` (the default);
- policy ``validate-key-required`` (authorization ``api_key_required``): ``/validate/check`` answers
  only a caller with the validate API key (``pi-manage api createtoken -r validate``; local secret
  ``privacyidea-validate-key``, the password of the ``mfa_default`` connection). Without it anyone
  who can reach the port could test codes and run up other people's fail counters;
- policy ``no-user-login`` (webui ``login_mode=disable``): directory users cannot log in to
  privacyIDEA with their LDAP password. privacyIDEA lets a user do everything when no user policy
  exists, so otherwise a stolen directory password alone would enrol a second token of the
  attacker's and defeat the second factor. Tokens are enrolled by admins only (``include.cli mfa``);
- ``totp.timeWindow`` = :data:`TIME_WINDOW_SECONDS`, see there, and event handler ``totp-no-drift``
  (after each accepted TOTP code ``timeShift`` = 0), so the window stays centred on the server's
  clock instead of following a late code (see :func:`configure`);
- the admin ``admin`` with the local secret ``privacyidea-admin-password``.

:func:`enrol` enrols a directory user's token and keeps its seed in
``.local/<profile>/secrets/totp/<uid>`` (0600) for the tests' authenticator (``devstack/totp.py``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

from devstack import openldap, processes
from devstack.config import HOST, REPO_ROOT, VENV_BIN, Profile
from devstack.processes import ServiceError
from include.connectors.mfa import TOTP_SERIAL_PREFIX, PrivacyIdeaAdmin, validate_username

SERVICE_NAME = "privacyidea"
REQUIREMENTS = Path(__file__).with_name("privacyidea-requirements.txt")
VENV = REPO_ROOT / ".local" / "privacyidea-venv"
_STAMP = VENV / ".requirements-sha256"
_INSTALL_LOCK = REPO_ROOT / ".local" / "privacyidea-venv.lock"
_READY_MARKER = ".initialised-v1"
START_TIMEOUT = 60.0
ADMIN_USER = "admin"
REALM = "secops"
RESOLVER = "secops-directory"
VALIDATE_KEY_USER = "airflow"
# Local secrets of the profile (.local/<profile>/secrets/<name>, 0600).
ADMIN_SECRET = "privacyidea-admin-password"  # noqa: S105 - the file's name, not a password
VALIDATE_KEY_SECRET = "privacyidea-validate-key"  # noqa: S105 - the file's name
SECRET_KEY_SECRET = "privacyidea-secret-key"  # noqa: S105 - the file's name
PEPPER_SECRET = "privacyidea-pepper"  # noqa: S105 - the file's name
# TOTP window: privacyIDEA accepts time steps counter - W/30 .. counter + W/30 - 1. 60 s: codes of the
# current step, the two before it and the one after it. A person reads the code, switches app, types
# it and sends the form: a code shown late in its step arrives one step old, and phone clocks (NTP,
# usually within seconds) may be up to half a minute off either way; 60 covers both. The default, 180,
# keeps a phished or shoulder-surfed code good for 5.5 minutes (6 steps back, 5 ahead); 60 keeps it
# good for at most 90 s, and RFC 6238 (5.2) recommends at most one step of network delay. 30 (the
# current and the previous step only) refuses a phone that runs a few seconds fast at a step's edge.
TIME_WINDOW_SECONDS = 60
STEPS_BACK = TIME_WINDOW_SECONDS // 30  # for devstack/totp.py Authenticator and the tests
STEPS_AHEAD = TIME_WINDOW_SECONDS // 30 - 1
# Admin JWTs last an hour (privacyIDEA's default jwt_validity); reuse one for 50 minutes.
_ADMIN_JWT_MAX_AGE = 50 * 60


# --- where it lives ----------------------------------------------------------------------------
def home(profile: Profile) -> Path:
    return profile.root / "privacyidea"


def config_file(profile: Profile) -> Path:
    return home(profile) / "pi.cfg"


def app_log(profile: Profile) -> Path:
    """privacyIDEA's own log (PI_LOGFILE)."""
    return profile.logs / "privacyidea-app.log"


def url(profile: Profile) -> str:
    return f"http://{HOST}:{profile.mfa_port}"


def seeds_dir(profile: Profile) -> Path:
    return profile.root / "secrets" / "totp"


def seed_file(profile: Profile, uid: str) -> Path:
    return seeds_dir(profile) / validate_username(uid, operation="seed_file")


def admin_password(profile: Profile) -> str:
    return profile.local_secret(ADMIN_SECRET)


def validate_key(profile: Profile) -> str:
    """The validate API key (a JWT; a secret). Exists once :func:`initialise` ran."""
    path = profile.root / "secrets" / VALIDATE_KEY_SECRET
    if not path.exists():
        raise ServiceError(f"{path} is missing: run privacyidea.initialise({profile.name!r}) first")
    return path.read_text().strip()


def mfa_connection(profile: Profile) -> dict[str, object]:
    """The Airflow connection ``mfa_default`` (seeded into the local Secrets Manager; holds the key)."""
    return {
        "conn_type": "http",
        "host": HOST,
        "port": profile.mfa_port,
        "schema": "http",
        "password": validate_key(profile),
        "extra": {"realm": REALM, "timeout_seconds": 5},
    }


def _write_secret(path: Path, value: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(value)


# --- installation ------------------------------------------------------------------------------
def base_python() -> str:
    """The Python the project's venv was made from (its ``pyvenv.cfg``), else ``python3.11``."""
    cfg = VENV_BIN.parent / "pyvenv.cfg"
    if cfg.exists():
        values = dict(
            (key.strip(), value.strip())
            for key, _, value in (line.partition("=") for line in cfg.read_text().splitlines())
        )
        for candidate in (values.get("executable"), f"{values.get('home')}/python3.11"):
            if candidate and Path(candidate).exists():
                return candidate
    found = shutil.which("python3.11")
    if found is None:
        raise ServiceError("no python3.11 to build privacyIDEA's venv with (.venv/pyvenv.cfg, PATH)")
    return found


def _requirements_hash() -> str:
    return hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()


def is_installed() -> bool:
    return (
        (VENV / "bin" / "gunicorn").exists()
        and _STAMP.exists()
        and _STAMP.read_text() == _requirements_hash()
    )


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_installed() -> float:
    """Build the venv from the lock if missing or stale; return the seconds spent (0.0: nothing to do).
    Safe to call from several processes at once (a file lock)."""
    if is_installed():
        return 0.0
    began = time.monotonic()
    with _locked(_INSTALL_LOCK):
        if is_installed():
            return time.monotonic() - began
        shutil.rmtree(VENV, ignore_errors=True)
        steps = [
            [base_python(), "-m", "venv", str(VENV)],
            [
                str(VENV / "bin" / "pip"),
                "install",
                "-q",
                "--no-deps",
                "--disable-pip-version-check",
                "-r",
                str(REQUIREMENTS),
            ],
        ]
        for argv in steps:
            result = subprocess.run(argv, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                shutil.rmtree(VENV, ignore_errors=True)
                step = " ".join(argv[:3])
                raise ServiceError(
                    f"installing privacyIDEA into {VENV} failed at `{step}`: {result.stderr.strip()[-3000:]}"
                )
        _STAMP.write_text(_requirements_hash())
    return time.monotonic() - began


# --- the state of a profile ----------------------------------------------------------------------
def pi_cfg(profile: Profile) -> str:
    root = home(profile)
    secret_key = profile.local_secret(SECRET_KEY_SECRET, lambda: os.urandom(32).hex())
    pepper = profile.local_secret(PEPPER_SECRET)
    values = {
        "SQLALCHEMY_DATABASE_URI": f"sqlite:///{root / 'privacyidea.sqlite'}",
        "SECRET_KEY": secret_key,
        "PI_PEPPER": pepper,
        "PI_ENCFILE": str(root / "enckey"),
        "PI_AUDIT_KEY_PRIVATE": str(root / "private.pem"),
        "PI_AUDIT_KEY_PUBLIC": str(root / "public.pem"),
        "PI_LOGFILE": str(app_log(profile)),
        "PI_NODE_UUID": str(uuid.uuid5(uuid.NAMESPACE_URL, f"orchestrator-mfa-{profile.name}")),
        "PI_NODE": f"orchestrator-{profile.name}",
        "PI_BASE_URL": url(profile),
    }
    lines = ["# Generated by devstack/privacyidea.py; holds secrets (0600).", "import logging"]
    lines += [f"{key} = {value!r}" for key, value in values.items()]
    # INFO: privacyIDEA logs request parameters (codes, seeds) only at DEBUG.
    lines.append("PI_LOGLEVEL = logging.INFO")
    return "\n".join(lines) + "\n"


WSGI = """\
import os
from privacyidea.app import create_app

config_file = os.environ["PRIVACYIDEA_CONFIGFILE"]
application = create_app(config_name="production", config_file=config_file, silent=True)
"""

# pi-manage's setup steps in one process (each pi-manage call spends about 3.5 s on imports). Secrets
# come in on stdin and the validate key goes out on stdout: never on a command line.
SETUP_SCRIPT = """\
import json, sys
from click.testing import CliRunner
from privacyidea.cli.pimanage.main import cli

given = json.load(sys.stdin)

def run(args, stdin=None):
    result = CliRunner().invoke(cli, args, input=stdin)
    if result.exit_code != 0:
        step = " ".join(args[:2])
        sys.stderr.write(f"pi-manage {step} failed (exit {result.exit_code}): {result.exception!r}\\n")
        sys.exit(1)
    return result.output

run(["setup", "create_enckey"])
run(["setup", "create_audit_keys"])
run(["setup", "create_tables"])
password = given["admin_password"]
run(["admin", "add", given["admin_user"], "-e", "admin@localhost"], stdin=f"{password}\\n{password}\\n")
output = run(["api", "createtoken", "-r", "validate", "-u", given["validate_user"], "-d", "3650"])
keys = [line.split(":", 1)[1].strip() for line in output.splitlines() if line.startswith("Auth-Token:")]
json.dump({"validate_key": keys[0]}, sys.stdout)
"""


def _env(profile: Profile) -> dict[str, str]:
    return {
        "PATH": f"{VENV / 'bin'}:/usr/bin:/bin",
        "PRIVACYIDEA_CONFIGFILE": str(config_file(profile)),
        "HOME": str(home(profile)),
        "LANG": "C.UTF-8",
    }


def initialise(profile: Profile, *, fresh: bool) -> None:
    """Write the config and create keys, tables, the admin and the validate key, if not done yet
    (``fresh`` wipes the state and the enrolled seeds first)."""
    root = home(profile)
    if fresh and root.exists():
        stop(profile)
        shutil.rmtree(root)
        shutil.rmtree(seeds_dir(profile), ignore_errors=True)
    if (root / _READY_MARKER).exists():
        return
    # Half-built or of an older layout: this profile's server (by its PID) and its state go.
    stop(profile)
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(seeds_dir(profile), ignore_errors=True)
    root.mkdir(parents=True, mode=0o700)
    root.chmod(0o700)
    profile.logs.mkdir(parents=True, exist_ok=True)
    _write_secret(config_file(profile), pi_cfg(profile))
    (root / "wsgi.py").write_text(WSGI)
    given = {
        "admin_user": ADMIN_USER,
        "admin_password": admin_password(profile),
        "validate_user": VALIDATE_KEY_USER,
    }
    result = subprocess.run(
        [str(VENV / "bin" / "python"), "-c", SETUP_SCRIPT],
        input=json.dumps(given),
        capture_output=True,
        text=True,
        env=_env(profile),
        cwd=root,
        timeout=300,
        check=False,
    )
    if result.returncode != 0:
        # stderr only: stdout would carry the validate key.
        raise ServiceError(f"privacyIDEA setup in {root} failed: {result.stderr.strip()[-3000:]}")
    try:
        key = json.loads(result.stdout)["validate_key"]
    except (ValueError, KeyError):
        raise ServiceError(f"privacyIDEA setup in {root} printed no validate key") from None
    _write_secret(profile.root / "secrets" / VALIDATE_KEY_SECRET, key)
    (root / _READY_MARKER).write_text("")


# --- the server ----------------------------------------------------------------------------------
def healthy(profile: Profile) -> bool:
    import requests

    try:
        response = requests.get(f"{url(profile)}/healthz/", timeout=2)
    except requests.RequestException:
        return False
    return response.status_code == 200


def start(profile: Profile) -> float:
    """Start gunicorn on 127.0.0.1 only, wait for /healthz/, then :func:`configure`; returns the
    seconds from start to healthy (0.0: it already ran)."""
    if is_running(profile):
        return 0.0
    if not 0 < profile.mfa_port < 65536:
        raise ServiceError(f"profile {profile.name} has no usable mfa_port ({profile.mfa_port})")
    if not (home(profile) / _READY_MARKER).exists():
        raise ServiceError(f"{home(profile)} is not initialised: call privacyidea.initialise first")
    if processes.port_open(HOST, profile.mfa_port):
        raise ServiceError(f"{HOST}:{profile.mfa_port} is taken by another process; privacyIDEA not started")
    argv = [
        str(VENV / "bin" / "gunicorn"),
        "--workers", "1",
        "--bind", f"{HOST}:{profile.mfa_port}",
        "--no-control-socket",
        "--chdir", str(home(profile)),
        "--graceful-timeout", "5",
        "wsgi:application",
    ]  # fmt: skip
    began = time.monotonic()
    process = processes.start(
        SERVICE_NAME, argv, pids_dir=profile.pids, logs_dir=profile.logs, env=_env(profile)
    )
    log = profile.logs / f"{SERVICE_NAME}.log"
    deadline = began + START_TIMEOUT
    while not healthy(profile):
        if process.poll() is not None:
            processes.stop(SERVICE_NAME, pids_dir=profile.pids)
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:]) if log.exists() else ""
            raise ServiceError(
                f"privacyIDEA (gunicorn) exited with {process.returncode}; last lines of {log}:\n{tail}"
            )
        if time.monotonic() > deadline:
            stop(profile)
            raise ServiceError(
                f"privacyIDEA not healthy on {url(profile)} after {START_TIMEOUT:.0f}s; see {log}"
            )
        time.sleep(0.1)
    ready = time.monotonic() - began
    configure(profile)
    return ready


def is_running(profile: Profile) -> bool:
    return processes.running_pid(SERVICE_NAME, pids_dir=profile.pids) is not None


def stop(profile: Profile) -> bool:
    """Stop this profile's gunicorn by its own PID (its process group)."""
    return processes.stop(SERVICE_NAME, pids_dir=profile.pids)


# --- the admin API ---------------------------------------------------------------------------------
_ADMINS: dict[str, PrivacyIdeaAdmin] = {}


def admin(profile: Profile) -> PrivacyIdeaAdmin:
    """An admin client of this profile's server; its JWT is reused within the process and, through a
    0600 file in the state folder, across processes (a login costs about 0.5 s of hashing)."""
    client = _ADMINS.get(profile.name)
    if client is not None:
        return client
    jwt_file = home(profile) / "admin-jwt"
    token = None
    if jwt_file.exists() and time.time() - jwt_file.stat().st_mtime < _ADMIN_JWT_MAX_AGE:
        token = jwt_file.read_text().strip() or None
    client = PrivacyIdeaAdmin(
        url(profile), username=ADMIN_USER, password=admin_password(profile), realm=REALM, token=token
    )
    if token is None:
        _write_secret(jwt_file, client.login())
    _ADMINS[profile.name] = client
    return client


def configure(profile: Profile) -> None:
    """Resolver, realm, policies and TOTP window (idempotent: each POST sets the same values)."""
    client = admin(profile)
    client.set_resolver(
        RESOLVER,
        {
            "type": "ldapresolver",
            "LDAPURI": openldap.url(profile),
            "LDAPBASE": f"{openldap.PEOPLE_OU},{openldap.SUFFIX}",
            "AUTHTYPE": "Simple",
            "BINDDN": openldap.READER_DN,
            "BINDPW": openldap.reader_password(profile),
            "LOGINNAMEATTRIBUTE": "uid",
            "LDAPSEARCHFILTER": "(uid=*)(objectClass=inetOrgPerson)",
            "USERINFO": json.dumps(
                {"username": "uid", "givenname": "givenName", "surname": "sn", "email": "mail"}
            ),
            "UIDTYPE": "entryUUID",
            "TIMEOUT": "5",
            "SIZELIMIT": "500",
            # Resolver cache off: a person removed from the directory is unknown at once.
            "CACHE_TIMEOUT": "0",
            "NOREFERRALS": "True",
        },
    )
    client.set_realm(REALM, [RESOLVER], default=True)
    client.set_policy(
        "validate-key-required", {"scope": "authorization", "action": "api_key_required", "active": True}
    )
    client.set_policy("no-user-login", {"scope": "webui", "action": "login_mode=disable", "active": True})
    client.set_config({"totp.timeWindow": str(TIME_WINDOW_SECONDS)})
    # privacyIDEA learns a token's clock drift from every accepted code (tokeninfo timeShift =
    # the matched step's time - now) and centres the window there. An approver who sends a code
    # two steps old (slow typing) would teach it a -60 s shift, which leaves the current code
    # outside the window: every later code "wrong" until the token locks. Phones keep NTP time,
    # so the drift is reset after each success: the window stays where TIME_WINDOW_SECONDS says.
    client.set_event(
        "totp-no-drift",
        {
            "event": "validate_check",
            "handlermodule": "Token",
            "action": "set tokeninfo",
            "position": "post",
            "active": True,
            "conditions": {"result_value": "True", "tokentype": "totp"},
            "option.key": "timeShift",
            "option.value": "0",
        },
    )


def enrol(profile: Profile, uid: str, *, known_new: bool = False) -> str:
    """Enrol (or re-enrol: the old token goes) a TOTP token for directory user ``uid`` with a fresh
    seed; keep the base32 seed in ``.local/<profile>/secrets/totp/<uid>`` (0600) and return it.

    About 0.1 s with the admin JWT reused. Concurrent calls are safe: for different users they run
    side by side; for the same user a per-user file lock (also across processes) serialises them, so
    the seed file always holds the seed of the token the server has.
    """
    path = seed_file(profile, uid)
    with _locked(home(profile) / "locks" / f"enrol-{uid}"):
        enrolment = admin(profile).enrol_totp(uid, known_new=known_new)
        _write_secret(path, enrolment.seed_b32)
    return enrolment.seed_b32


def enrol_missing(profile: Profile, uids: Iterable[str]) -> list[str]:
    """:func:`enrol` each of ``uids`` that has no kept seed yet (the stack's seeded people); returns
    the ones enrolled now. A ``--fresh`` start wipes the seeds with the server's DB, so all of them."""
    missing = [uid for uid in uids if not seed_file(profile, uid).exists()]
    if not missing:
        return []
    owners = admin(profile).token_owners()  # one call instead of two look-ups per person
    taken = set(owners) | set(owners.values())
    for uid in missing:
        enrol(profile, uid, known_new=uid not in taken and f"{TOTP_SERIAL_PREFIX}{uid}" not in taken)
    return missing


def enrol_backups(profile: Profile, uid: str, count: int) -> list[str]:
    """Give ``uid`` ``count`` backup TOTP tokens (spare authenticators) beside :func:`enrol`'s;
    return their seeds (not kept: the tests that ask hold them in memory)."""
    client = admin(profile)
    return [client.add_backup_totp(uid, number).seed_b32 for number in range(1, count + 1)]


def seed(profile: Profile, uid: str) -> str:
    """The seed :func:`enrol` kept for ``uid``."""
    path = seed_file(profile, uid)
    if not path.exists():
        raise ServiceError(f"{path} is missing: privacyidea.enrol({profile.name!r}, {uid!r}) first")
    return path.read_text().strip()


def reset_failcounter(profile: Profile, uid: str) -> int:
    """Clear the fail counter of ``uid``'s tokens (after 10 failures every code is refused)."""
    return admin(profile).reset_failcounter(uid)


def main(argv: list[str] | None = None) -> int:
    """``python -m devstack.privacyidea PROFILE``: install, initialise and start, report times."""
    from devstack.config import PROFILES

    profile = PROFILES[(argv or sys.argv[1:] or ["run"])[0]]
    installed = ensure_installed()
    initialise(profile, fresh=False)
    ready = start(profile)
    print(f"privacyIDEA on {url(profile)}: install {installed:.1f}s, healthy {ready:.1f}s after start")
    return 0


if __name__ == "__main__":
    sys.exit(main())
