"""A project-local OpenLDAP directory (Debian's ``slapd``) under ``.local/<profile>/ldap``.

The company directory the HR workflows provision: suffix ``dc=secops,dc=example`` in an MDB
database, people under ``ou=people`` (``uid=<uid>,ou=people,dc=secops,dc=example``), groups
(``groupOfNames``) under ``ou=groups``. The admin (``cn=admin,dc=secops,dc=example``) has a random
password kept in ``.local/<profile>/secrets/ldap-admin-password``; only its hash (SHA-512 crypt,
made by ``slappasswd``) is in slapd's config, and slapd hashes user passwords the same way.

Disabling an account (``include/connectors/ldap.py``): the ``ppolicy`` overlay with a default
policy (``cn=default,ou=policies``, ``pwdLockout: TRUE``, no failure limit, so nothing is locked
automatically) refuses every bind of an entry carrying ``pwdAccountLockedTime: 000001010000Z`` (an
administrative lock that never expires); the connector also removes the password. The ``unique``
overlay keeps ``employeeNumber`` unique under ``ou=people``.

The config (cn=config) is built offline with ``slapadd -n0`` from an LDIF generated here, the base
entries with ``slapadd -n1``; ``slapd -d stats`` then runs in the foreground as a service of this
stack (PID in ``.local/<profile>/pids/openldap.pid``, log in ``.local/<profile>/logs/openldap.log``),
listening on ``ldap://127.0.0.1:<profile.ldap_port>/`` only, as the ``openldap`` user when started
as root. It starts in a fraction of a second.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from devstack import processes
from devstack.config import HOST, Profile
from devstack.processes import ServiceError

PACKAGES = ("slapd", "ldap-utils")
SLAPD = Path("/usr/sbin/slapd")
SLAPADD = Path("/usr/sbin/slapadd")
SLAPPASSWD = Path("/usr/sbin/slappasswd")
SCHEMA_DIR = Path("/etc/ldap/schema")
MODULE_DIR = Path("/usr/lib/ldap")
SCHEMAS = ("core", "cosine", "nis", "inetorgperson")
SERVICE_NAME = "openldap"
SYSTEM_USER = "openldap"  # created by Debian's slapd package; slapd drops root privileges to it

SUFFIX = "dc=secops,dc=example"
ADMIN_DN = f"cn=admin,{SUFFIX}"
PEOPLE_OU = "ou=people"
GROUPS_OU = "ou=groups"
POLICIES_OU = "ou=policies"
SERVICES_OU = "ou=services"
# The read-only account of the orchestrator's login (include/auth/) and of the MFA server's user
# resolver (devstack/privacyidea.py): it reads people and groups, never a password, writes nothing.
READER_DN = f"cn=orchestrator-reader,{SERVICES_OU},{SUFFIX}"
READER_SECRET_FILE = "ldap-reader-password"  # noqa: S105 - the name of the file, not a password
DEFAULT_POLICY_DN = f"cn=default,{POLICIES_OU},{SUFFIX}"
ADMIN_SECRET_FILE = "ldap-admin-password"  # noqa: S105 - the name of the file, not a password
# SHA-512 crypt, 100,000 rounds, for the admin and every user password (the server hashes them).
# Not {ARGON2}: Debian 12's argon2 module (2.5.13) stores its hashes with stray trailing bytes.
PASSWORD_HASH = "{CRYPT}"  # noqa: S105 - the hash scheme slapd uses, not a password
CRYPT_SALT_FORMAT = "$6$rounds=100000$%.16s"
DEBIAN_PIDFILE = Path("/var/run/slapd/slapd.pid")
# No default database in /etc/ldap: this project's slapd has its own config directory.
PRESEED = "slapd slapd/no_configuration boolean true\n"
START_TIMEOUT = 30.0
# v2: the read-only service account (an older directory is rebuilt on the next start).
_READY_MARKER = ".initialised-v2"


# --- where it lives ----------------------------------------------------------------------------
def home(profile: Profile) -> Path:
    return profile.root / "ldap"


def config_dir(profile: Profile) -> Path:
    return home(profile) / "slapd.d"


def data_dir(profile: Profile) -> Path:
    return home(profile) / "data"


def run_dir(profile: Profile) -> Path:
    return home(profile) / "run"


def url(profile: Profile) -> str:
    return f"ldap://{HOST}:{profile.ldap_port}"


def admin_password(profile: Profile) -> str:
    return profile.local_secret(ADMIN_SECRET_FILE)


def reader_password(profile: Profile) -> str:
    return profile.local_secret(READER_SECRET_FILE)


def ldap_connection(profile: Profile) -> dict[str, object]:
    """The Airflow connection ``ldap_default`` (seeded into the local Secrets Manager)."""
    return {
        "conn_type": "ldap",
        "host": HOST,
        "port": profile.ldap_port,
        "login": ADMIN_DN,
        "password": admin_password(profile),
        "extra": {"base_dn": SUFFIX, "people_ou": PEOPLE_OU, "groups_ou": GROUPS_OU, "use_tls": False},
    }


# --- installation ------------------------------------------------------------------------------
def is_installed() -> bool:
    if not all(path.exists() for path in (SLAPD, SLAPADD, SLAPPASSWD, MODULE_DIR / "back_mdb.so")):
        return False
    return shutil.which("ldapsearch") is not None


def _stop_system_slapd(prefix: list[str]) -> None:
    """If the package started Debian's own slapd anyway, stop that one, by the PID it wrote."""
    if not DEBIAN_PIDFILE.exists():
        return
    try:
        pid = int(DEBIAN_PIDFILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    if processes.is_running(pid):
        subprocess.run([*prefix, "kill", "-TERM", str(pid)], check=False)


def ensure_installed() -> float:
    """Install slapd and ldap-utils from Debian if missing, starting no daemon; return seconds spent."""
    if is_installed():
        return 0.0
    began = time.monotonic()
    prefix = processes.root_prefix("OpenLDAP", PACKAGES)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive", "DEBCONF_NONINTERACTIVE_SEEN": "true"}
    subprocess.run([*prefix, "debconf-set-selections"], input=PRESEED, text=True, check=True, env=env)
    with processes.services_kept_down(prefix):
        processes.apt_install(prefix, PACKAGES, env)
    _stop_system_slapd(prefix)
    if not is_installed():
        raise ServiceError(f"installing {' '.join(PACKAGES)} did not leave slapd installed")
    return time.monotonic() - began


# --- the directory -----------------------------------------------------------------------------
def _system_user() -> pwd.struct_passwd | None:
    """The account slapd runs as when we are root (None: run as ourselves)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        return None


def _hash_password(password: str, workdir: Path) -> str:
    # Through a 0600 file (-T), so the password is never on a command line; -T keeps every byte.
    with tempfile.NamedTemporaryFile("w", dir=workdir, prefix=".pw-", delete=False) as handle:
        handle.write(password)
        path = Path(handle.name)
    try:
        path.chmod(0o600)
        result = subprocess.run(
            [str(SLAPPASSWD), "-h", PASSWORD_HASH, "-c", CRYPT_SALT_FORMAT, "-T", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        path.unlink(missing_ok=True)
    if result.returncode != 0 or not result.stdout.startswith(PASSWORD_HASH):
        raise ServiceError(f"slappasswd could not hash an LDAP password: {result.stderr.strip()}")
    return result.stdout.strip()


def config_ldif(profile: Profile, admin_hash: str) -> str:
    """cn=config: modules, schemas, the MDB database with its ACLs and the two overlays."""
    schemas = "\n".join(f"include: file://{SCHEMA_DIR / name}.ldif" for name in SCHEMAS)
    return f"""\
dn: cn=config
objectClass: olcGlobal
cn: config
olcPidFile: {run_dir(profile) / "slapd.pid"}
olcArgsFile: {run_dir(profile) / "slapd.args"}
olcLogLevel: stats
olcPasswordCryptSaltFormat: {CRYPT_SALT_FORMAT}

dn: cn=module{{0}},cn=config
objectClass: olcModuleList
cn: module{{0}}
olcModulePath: {MODULE_DIR}
olcModuleLoad: {{0}}back_mdb
olcModuleLoad: {{1}}ppolicy
olcModuleLoad: {{2}}unique

dn: cn=schema,cn=config
objectClass: olcSchemaConfig
cn: schema

{schemas}

dn: olcDatabase={{-1}}frontend,cn=config
objectClass: olcDatabaseConfig
objectClass: olcFrontendConfig
olcDatabase: {{-1}}frontend
olcPasswordHash: {PASSWORD_HASH}
olcSizeLimit: 5000

dn: olcDatabase={{0}}config,cn=config
objectClass: olcDatabaseConfig
olcDatabase: {{0}}config
olcAccess: {{0}}to * by * none

dn: olcDatabase={{1}}mdb,cn=config
objectClass: olcDatabaseConfig
objectClass: olcMdbConfig
olcDatabase: {{1}}mdb
olcSuffix: {SUFFIX}
olcRootDN: {ADMIN_DN}
olcRootPW: {admin_hash}
olcDbDirectory: {data_dir(profile)}
olcDbMaxSize: 1073741824
olcDbIndex: objectClass eq
olcDbIndex: uid,cn,mail,employeeNumber,member eq
olcAccess: {{0}}to attrs=userPassword by self write by anonymous auth by * none
olcAccess: {{1}}to * by self read by dn.exact="{READER_DN}" read by * none

dn: olcOverlay={{0}}ppolicy,olcDatabase={{1}}mdb,cn=config
objectClass: olcOverlayConfig
objectClass: olcPPolicyConfig
olcOverlay: {{0}}ppolicy
olcPPolicyDefault: {DEFAULT_POLICY_DN}
olcPPolicyHashCleartext: TRUE

dn: olcOverlay={{1}}unique,olcDatabase={{1}}mdb,cn=config
objectClass: olcOverlayConfig
objectClass: olcUniqueConfig
olcOverlay: {{1}}unique
olcUniqueURI: ldap:///{PEOPLE_OU},{SUFFIX}?employeeNumber?sub
"""


def base_ldif(reader_hash: str) -> str:
    """The suffix, the OUs the connector uses, the default password policy and the reader."""
    return f"""\
dn: {SUFFIX}
objectClass: dcObject
objectClass: organization
dc: secops
o: SecOps

dn: {PEOPLE_OU},{SUFFIX}
objectClass: organizationalUnit
ou: people

dn: {GROUPS_OU},{SUFFIX}
objectClass: organizationalUnit
ou: groups

dn: {POLICIES_OU},{SUFFIX}
objectClass: organizationalUnit
ou: policies

dn: {DEFAULT_POLICY_DN}
objectClass: applicationProcess
objectClass: pwdPolicy
cn: default
pwdAttribute: userPassword
pwdLockout: TRUE
pwdMaxFailure: 0

dn: {SERVICES_OU},{SUFFIX}
objectClass: organizationalUnit
ou: services

dn: {READER_DN}
objectClass: applicationProcess
objectClass: simpleSecurityObject
cn: orchestrator-reader
description: Read-only: the orchestrator's login and the MFA server's user resolver.
userPassword: {reader_hash}
"""


def _slapadd(profile: Profile, database: int, ldif: Path) -> None:
    result = subprocess.run(
        [str(SLAPADD), "-n", str(database), "-F", str(config_dir(profile)), "-l", str(ldif)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise ServiceError(f"slapadd -n{database} -l {ldif} failed: {result.stderr.strip()[-2000:]}")


def _chown_tree(root: Path, user: pwd.struct_passwd) -> None:
    for folder, dirs, files in os.walk(root):
        os.chown(folder, user.pw_uid, user.pw_gid)
        for name in (*dirs, *files):
            os.chown(Path(folder) / name, user.pw_uid, user.pw_gid, follow_symlinks=False)


def initialise(profile: Profile, *, fresh: bool) -> None:
    """Build the config and the base entries if needed (``fresh`` wipes the directory first)."""
    root = home(profile)
    if fresh and root.exists():
        stop(profile)
        shutil.rmtree(root)
    if (root / _READY_MARKER).exists():
        return
    # A build that failed half-way, or a directory of an older layout: this profile's own slapd
    # (stopped by its PID) and its folder go; the next start rebuilds both.
    stop(profile)
    shutil.rmtree(root, ignore_errors=True)
    for folder in (config_dir(profile), data_dir(profile), run_dir(profile)):
        folder.mkdir(parents=True, mode=0o700)
    root.chmod(0o700)
    config = root / "config.ldif"  # kept for reference; it holds the hash, never the password
    config.write_text(config_ldif(profile, _hash_password(admin_password(profile), root)))
    config.chmod(0o600)
    base = root / "base.ldif"
    base.write_text(base_ldif(_hash_password(reader_password(profile), root)))
    base.chmod(0o600)
    _slapadd(profile, 0, config)
    _slapadd(profile, 1, base)
    user = _system_user()
    if user is not None:
        _chown_tree(root, user)
    (root / _READY_MARKER).write_text("")


def start(profile: Profile) -> None:
    """Start slapd on 127.0.0.1 only; nothing to do when it already runs."""
    if is_running(profile):
        return
    if not 0 < profile.ldap_port < 32768:
        raise ServiceError(f"profile {profile.name} has no usable ldap_port ({profile.ldap_port})")
    if not (home(profile) / _READY_MARKER).exists():
        raise ServiceError(f"{home(profile)} is not initialised: call openldap.initialise first")
    if processes.port_open(HOST, profile.ldap_port):
        raise ServiceError(f"{HOST}:{profile.ldap_port} is taken by another process; slapd not started")
    argv = [str(SLAPD), "-d", "stats", "-h", f"{url(profile)}/", "-F", str(config_dir(profile))]
    user = _system_user()
    if user is not None:
        argv += ["-u", user.pw_name, "-g", grp.getgrgid(user.pw_gid).gr_name]
    process = processes.start(SERVICE_NAME, argv, pids_dir=profile.pids, logs_dir=profile.logs)
    log = profile.logs / f"{SERVICE_NAME}.log"
    deadline = time.monotonic() + START_TIMEOUT
    while not processes.port_open(HOST, profile.ldap_port):
        if process.poll() is not None:
            processes.stop(SERVICE_NAME, pids_dir=profile.pids)
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:]) if log.exists() else ""
            raise ServiceError(f"slapd exited with {process.returncode}; last lines of {log}:\n{tail}")
        if time.monotonic() > deadline:
            stop(profile)
            raise ServiceError(f"slapd not listening on {url(profile)} after {START_TIMEOUT:.0f}s; see {log}")
        time.sleep(0.05)


def is_running(profile: Profile) -> bool:
    return processes.running_pid(SERVICE_NAME, pids_dir=profile.pids) is not None


def stop(profile: Profile) -> bool:
    """Stop this profile's slapd by its own PID (SIGTERM: slapd closes the database cleanly)."""
    return processes.stop(SERVICE_NAME, pids_dir=profile.pids)
