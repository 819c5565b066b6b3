"""Database roles (issue 19): what a task's own role may do to the audit trail, and who reaches which DB.

The worker's role is the one in the ``audit_store`` connection, read as a worker reads it (Airflow's
Secrets Manager backend, with the components' own backend settings). As that role the audit tables
take INSERT and SELECT and refuse every change, truncation, trigger switch and drop for privilege;
the reader may not even INSERT. Each role reaches its own database only; nobody gets in without a
password; and no Airflow component holds, or is connected with, a superuser role.
``orch_admin`` (the superuser) is used here only to look at the catalog.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from airflow.providers.amazon.aws.secrets.secrets_manager import SecretsManagerBackend
from psycopg import errors
from sqlalchemy.engine import make_url

from devstack import moto_seed, postgres
from devstack.airflow_env import airflow_env
from devstack.config import HOST
from devstack.stack import Stack
from include.audit.emit import AUDIT_CONN_ID, dsn_from_connection
from include.audit.store import AuditStore

AUDIT_TABLES = ("audit_record", "audit_checkpoint")
ACTOR = "db-roles-e2e"
# Environment variables that name a database a component connects to.
DB_URL_SETTINGS = ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__CELERY__RESULT_BACKEND")


def _connection(stack: Stack, conn_id: str) -> Any:
    """``conn_id`` exactly as a component or task gets it: the configured secrets backend."""
    kwargs = json.loads(stack.env["AIRFLOW__SECRETS__BACKEND_KWARGS"])
    connection = SecretsManagerBackend(**kwargs).get_connection(conn_id)
    assert connection is not None, conn_id
    return connection


@pytest.fixture(scope="module")
def writer_dsn(stack: Stack) -> str:
    return dsn_from_connection(_connection(stack, AUDIT_CONN_ID))


@pytest.fixture(scope="module")
def writer(writer_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(writer_dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture(scope="module")
def admin(stack: Stack) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(postgres.admin_dsn(stack.profile), autocommit=True) as conn:
        yield conn


def test_the_worker_connection_names_the_audit_writer(stack: Stack, writer: psycopg.Connection[Any]) -> None:
    row = writer.execute("SELECT current_user, session_user, current_database()").fetchone()
    assert row == (postgres.AUDIT_WRITER, postgres.AUDIT_WRITER, "audit")


def test_the_audit_writer_appends_through_the_store(writer_dsn: str) -> None:
    with AuditStore(writer_dsn) as audit:
        record = audit.append({"kind": "run.triggered", "actor": ACTOR, "correlation_id": "db-roles"})
        stored = audit.records(first=record.seq, last=record.seq)
    assert [(r["seq"], r["actor"], r["hash"]) for r in stored] == [(record.seq, ACTOR, record.hash)]


# Fixed statements over the schema's own table names (no input): a privilege error for each.
CHANGES = [
    pytest.param(
        f"{verb} {table}{suffix}",
        rf"permission denied for table {table}",
        id=f"{verb.split()[0].lower()}-{table}",
    )
    for table in AUDIT_TABLES
    for verb, suffix in (("UPDATE", " SET at = at"), ("DELETE FROM", ""), ("TRUNCATE", ""))
] + [
    pytest.param(
        "ALTER TABLE audit_record DISABLE TRIGGER audit_record_append_only",
        r"must be owner of table audit_record",
        id="disable-trigger",
    ),
    pytest.param(
        "ALTER TABLE audit_checkpoint DISABLE TRIGGER USER",
        r"must be owner of table audit_checkpoint",
        id="disable-all-triggers",
    ),
    pytest.param("DROP TABLE audit_record", r"must be owner of table audit_record", id="drop-table"),
    pytest.param(
        "DROP FUNCTION audit_refuse_change() CASCADE",
        r"must be owner of function audit_refuse_change",
        id="drop-trigger-function",
    ),
    pytest.param(
        "SET session_replication_role = replica",
        r'permission denied to set parameter "session_replication_role"',
        id="skip-triggers-for-session",
    ),
    pytest.param(
        "CREATE TABLE audit_shadow (seq bigint)", r"permission denied for schema public", id="create-table"
    ),
]


@pytest.mark.parametrize(("statement", "message"), CHANGES)
def test_the_audit_writer_cannot_change_the_audit_tables(
    writer: psycopg.Connection[Any], statement: str, message: str
) -> None:
    with pytest.raises(errors.InsufficientPrivilege, match=message):
        writer.execute(statement)


def test_the_audit_tables_are_owned_by_audit_owner_and_granted_insert_select_only(stack: Stack) -> None:
    with psycopg.connect(postgres.admin_dsn(stack.profile, "audit"), autocommit=True) as admin:
        owners = admin.execute(
            "SELECT relname, pg_get_userbyid(relowner) FROM pg_class"
            " WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'S') ORDER BY 1"
        ).fetchall()
        grants = admin.execute(
            "SELECT c.relname, CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END,"
            " string_agg(a.privilege_type, ',' ORDER BY a.privilege_type)"
            " FROM pg_class c, aclexplode(c.relacl) a"
            " WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r' AND a.grantee <> c.relowner"
            " GROUP BY 1, 2 ORDER BY 1, 2"
        ).fetchall()
    tables = [name for name, _ in owners]
    assert set(AUDIT_TABLES) <= set(tables)
    assert {owner for _, owner in owners} == {postgres.AUDIT_OWNER}
    expected = []
    for table in tables:
        expected += [(table, postgres.AUDIT_READER, "SELECT")]
        expected += [(table, postgres.AUDIT_WRITER, "INSERT,SELECT")]
    assert grants == expected


def test_the_audit_reader_reads_but_cannot_append(stack: Stack, writer_dsn: str) -> None:
    with AuditStore(writer_dsn) as audit:
        head = audit.head()
    with AuditStore(stack.audit_reader_dsn) as reader:
        assert reader.head() == head
        with pytest.raises(errors.InsufficientPrivilege, match="permission denied for table audit_record"):
            reader.append({"kind": "run.triggered", "actor": ACTOR})


CROSSINGS = [
    pytest.param(postgres.AUDIT_WRITER, "airflow", id="audit_writer-to-metadata"),
    pytest.param(postgres.AUDIT_READER, "airflow", id="audit_reader-to-metadata"),
    pytest.param(postgres.AUDIT_WRITER, "ratelimit", id="audit_writer-to-ratelimit"),
    pytest.param(postgres.DB_USER, "audit", id="airflow-to-audit"),
    pytest.param(postgres.DB_USER, "ratelimit", id="airflow-to-ratelimit"),
    pytest.param(postgres.RATELIMIT_ROLE, "audit", id="ratelimit-to-audit"),
    pytest.param(postgres.RATELIMIT_ROLE, "airflow", id="ratelimit-to-metadata"),
    pytest.param(postgres.DB_USER, "postgres", id="airflow-to-maintenance-db"),
]


@pytest.mark.parametrize(("role", "database"), CROSSINGS)
def test_a_role_reaches_only_its_own_database(stack: Stack, role: str, database: str) -> None:
    with pytest.raises(psycopg.OperationalError, match=rf'permission denied for database "{database}"'):
        psycopg.connect(postgres.dsn(stack.profile, role, database), connect_timeout=5)


@pytest.mark.parametrize(
    ("password", "message"),
    [
        pytest.param(None, r"no password supplied", id="no-password"),
        pytest.param("wrong", r'password authentication failed for user "audit_writer"', id="wrong-password"),
    ],
)
def test_nobody_gets_in_without_the_password(
    stack: Stack, tmp_path: Path, password: str | None, message: str
) -> None:
    params: dict[str, Any] = {"passfile": str(tmp_path / "none")}  # no ~/.pgpass either
    if password is not None:
        params["password"] = password
    with pytest.raises(psycopg.OperationalError, match=message):
        psycopg.connect(
            host=HOST,
            port=stack.profile.pg_port,
            user=postgres.AUDIT_WRITER,
            dbname="audit",
            connect_timeout=5,
            **params,
        )


def test_the_server_trusts_nobody(admin: psycopg.Connection[Any]) -> None:
    methods = admin.execute("SELECT DISTINCT auth_method FROM pg_hba_file_rules ORDER BY 1").fetchall()
    assert methods == [("scram-sha-256",)]
    addresses = admin.execute("SHOW listen_addresses").fetchone()
    assert addresses == (HOST,)


def _superusers(admin: psycopg.Connection[Any]) -> set[str]:
    return {row[0] for row in admin.execute("SELECT rolname FROM pg_roles WHERE rolsuper")}


def test_only_orch_admin_is_privileged(admin: psycopg.Connection[Any]) -> None:
    rows = admin.execute(
        "SELECT rolname, rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls, rolcanlogin"
        " FROM pg_roles WHERE rolname = ANY(%s) ORDER BY rolname",
        ([*postgres.LOGIN_ROLES, postgres.AUDIT_OWNER, postgres.ADMIN_ROLE],),
    ).fetchall()
    assert rows == [
        ("airflow", False, False, False, False, False, True),
        ("audit_owner", False, False, False, False, False, False),
        ("audit_reader", False, False, False, False, False, True),
        ("audit_writer", False, False, False, False, False, True),
        ("orch_admin", True, True, True, True, True, True),
        ("ratelimit", False, False, False, False, False, True),
    ]
    owners = admin.execute(
        "SELECT datname, pg_get_userbyid(datdba) FROM pg_database WHERE datname = ANY(%s) ORDER BY 1",
        (["airflow", "audit", "ratelimit"],),
    ).fetchall()
    assert owners == [("airflow", "airflow"), ("audit", "audit_owner"), ("ratelimit", "ratelimit")]


def _db_users(env: dict[str, str]) -> dict[str, str | None]:
    return {name: make_url(env[name].removeprefix("db+")).username for name in DB_URL_SETTINGS if name in env}


def test_no_component_connects_as_a_superuser(stack: Stack, admin: psycopg.Connection[Any]) -> None:
    superusers = _superusers(admin)
    assert postgres.ADMIN_ROLE in superusers
    admin_password = postgres.password(stack.profile, postgres.ADMIN_ROLE)
    expected = {name: postgres.DB_USER for name in DB_URL_SETTINGS if name in airflow_env(stack.profile)}
    # Every component starts from stack.env (its /proc environ is no witness: setproctitle
    # overwrites it), so what it is connected as right now is checked below.
    assert _db_users(stack.env) == expected
    assert [name for name, value in stack.env.items() if admin_password in value] == []
    # What is connected right now (components, tasks, triggers), not only what is configured.
    sessions = admin.execute(
        "SELECT DISTINCT usename FROM pg_stat_activity"
        " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
    ).fetchall()
    assert {row[0] for row in sessions} & superusers == set()
    assert {row[0] for row in sessions} >= {postgres.DB_USER}


def test_no_seeded_connection_names_a_superuser(stack: Stack, admin: psycopg.Connection[Any]) -> None:
    superusers = _superusers(admin)
    postgres_connections = {
        conn_id: _connection(stack, conn_id)
        for conn_id, definition in moto_seed.platform_connections(stack.profile).items()
        if definition.get("conn_type") == "postgres"
    }
    logins = {conn_id: conn.login for conn_id, conn in postgres_connections.items()}
    assert logins == (
        {"audit_store": postgres.AUDIT_WRITER}
        if stack.profile.distributed  # ratelimit_store is Redis there
        else {"audit_store": postgres.AUDIT_WRITER, "ratelimit_store": postgres.RATELIMIT_ROLE}
    )
    assert set(logins.values()) & superusers == set()
    for conn in postgres_connections.values():
        with psycopg.connect(dsn_from_connection(conn), connect_timeout=5) as session:  # the password works
            assert session.execute("SELECT current_user").fetchone() == (conn.login,)
