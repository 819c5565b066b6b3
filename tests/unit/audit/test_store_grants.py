"""What the audit tables' owner grants (include/audit/store.py grant_statements), as SQL text."""

from __future__ import annotations

import pytest

from include.audit.store import grant_statements


@pytest.mark.parametrize(
    ("writers", "readers", "expected"),
    [
        pytest.param(
            ("audit_writer",),
            ("audit_reader",),
            [
                'REVOKE ALL ON ALL TABLES IN SCHEMA public FROM PUBLIC, "audit_writer", "audit_reader"',
                'REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM PUBLIC, "audit_writer", "audit_reader"',
                'GRANT INSERT, SELECT ON ALL TABLES IN SCHEMA public TO "audit_writer"',
                'GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO "audit_writer"',
                'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "audit_reader"',
            ],
            id="writer-and-reader",
        ),
        pytest.param(
            (),
            (),
            [
                "REVOKE ALL ON ALL TABLES IN SCHEMA public FROM PUBLIC",
                "REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM PUBLIC",
            ],
            id="owner-only",
        ),
        pytest.param(
            ('odd"name',),
            (),
            [
                'REVOKE ALL ON ALL TABLES IN SCHEMA public FROM PUBLIC, "odd""name"',
                'REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM PUBLIC, "odd""name"',
                'GRANT INSERT, SELECT ON ALL TABLES IN SCHEMA public TO "odd""name"',
                'GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO "odd""name"',
            ],
            id="quoted-identifier",
        ),
    ],
)
def test_grant_statements(writers: tuple[str, ...], readers: tuple[str, ...], expected: list[str]) -> None:
    rendered = [statement.as_string(None) for statement in grant_statements(writers=writers, readers=readers)]
    assert rendered == expected


def test_no_grant_ever_names_a_changing_privilege() -> None:
    text = " ".join(s.as_string(None) for s in grant_statements(writers=("w",), readers=("r",)))
    granted = text.split("GRANT ", 1)[1]
    for privilege in ("UPDATE", "DELETE", "TRUNCATE", "TRIGGER", "REFERENCES", "ALL PRIVILEGES"):
        assert privilege not in granted
