"""The local cluster's roles, grants and URLs (devstack/postgres.py), without a server."""

from __future__ import annotations

import pytest

from devstack import postgres
from devstack.config import Profile

PROFILE = Profile(name="unit-postgres", api_port=0, pg_port=25999, moto_port=0, smtp_port=0)


@pytest.fixture
def passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    """Passwords that need percent-encoding, instead of files under .local/."""
    monkeypatch.setattr(Profile, "db_password", lambda self, role: f"p@ss/{role}:x")


@pytest.mark.usefixtures("passwords")
@pytest.mark.parametrize(
    ("role", "database", "driver", "expected"),
    [
        pytest.param(
            "audit_writer",
            "audit",
            "",
            "postgresql://audit_writer:p%40ss%2Faudit_writer%3Ax@127.0.0.1:25999/audit",
            id="libpq",
        ),
        pytest.param(
            "airflow",
            "airflow",
            "psycopg2",
            "postgresql+psycopg2://airflow:p%40ss%2Fairflow%3Ax@127.0.0.1:25999/airflow",
            id="sqlalchemy",
        ),
    ],
)
def test_dsn_names_the_role_with_its_encoded_password(
    role: str, database: str, driver: str, expected: str
) -> None:
    assert postgres.dsn(PROFILE, role, database, driver=driver) == expected


@pytest.mark.usefixtures("passwords")
def test_the_metadata_url_is_the_airflow_role_never_the_superuser() -> None:
    assert PROFILE.db_url == postgres.dsn(PROFILE, postgres.DB_USER, "airflow", driver="psycopg2")
    assert postgres.admin_dsn(PROFILE, "audit").startswith("postgresql://orch_admin:")


@pytest.mark.parametrize(
    ("role", "database", "message"),
    [
        pytest.param(
            'x"; DROP ROLE y; --', "audit", r"role name must be a lower-case SQL identifier", id="role"
        ),
        pytest.param(
            "airflow", "Audit", r"database name must be a lower-case SQL identifier, got 'Audit'", id="db"
        ),
    ],
)
def test_dsn_refuses_a_name_that_is_not_an_identifier(role: str, database: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        postgres.dsn(PROFILE, role, database)


@pytest.mark.parametrize(
    ("hba", "expected"),
    [
        pytest.param("host all all 127.0.0.1/32 trust\n", True, id="trust"),
        pytest.param("local all all trust # initdb -A trust\n", True, id="trust-with-comment"),
        pytest.param(
            "# METHOD can be trust, reject, md5\nlocal all all scram-sha-256\n"
            "host all all 127.0.0.1/32 scram-sha-256\n",
            False,
            id="scram-and-a-comment-naming-trust",
        ),
    ],
)
def test_uses_trust(hba: str, expected: bool) -> None:
    assert postgres.uses_trust(hba) is expected


@pytest.mark.parametrize(
    ("role", "expected"),
    [
        pytest.param(
            "airflow", "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS", id="login"
        ),
        pytest.param(
            "audit_owner", "NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS", id="owner"
        ),
    ],
)
def test_role_attributes(role: str, expected: str) -> None:
    assert postgres.role_attributes(role) == expected


@pytest.mark.parametrize(
    ("database", "expected"),
    [
        pytest.param(
            postgres.Database("audit", "audit_owner", ("audit_writer", "audit_reader")),
            [
                'REVOKE ALL ON DATABASE "audit" FROM PUBLIC',
                'GRANT CONNECT ON DATABASE "audit" TO "audit_writer"',
                'GRANT CONNECT ON DATABASE "audit" TO "audit_reader"',
            ],
            id="audit",
        ),
        pytest.param(
            postgres.Database("airflow", "airflow"),
            ['REVOKE ALL ON DATABASE "airflow" FROM PUBLIC'],
            id="owner-only",
        ),
    ],
)
def test_database_grants(database: postgres.Database, expected: list[str]) -> None:
    assert postgres.database_grants(database) == expected


def test_each_database_has_its_own_owner_and_only_the_audit_roles_share_one() -> None:
    assert {(d.name, d.owner, d.users) for d in postgres.DATABASES} == {
        ("airflow", "airflow", ()),
        ("ratelimit", "ratelimit", ()),
        ("audit", "audit_owner", ("audit_writer", "audit_reader")),
    }
    assert postgres.ADMIN_ROLE not in postgres.LOGIN_ROLES


def test_create_database_refuses_another_owner_for_a_known_database() -> None:
    with pytest.raises(ValueError, match=r"database 'audit' is owned by 'audit_owner', not 'airflow'"):
        postgres.create_database(PROFILE, "audit", owner="airflow")
