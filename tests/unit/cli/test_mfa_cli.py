"""``python -m include.cli mfa``: where the admin credentials may come from, what enrol prints (and
where it refuses to), against a scripted stand-in of privacyIDEA's admin API. The real server is in
tests/integration/test_privacyidea.py."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from devstack.standins.fault import FaultServer, Reply
from include.cli import mfa
from include.cli.__main__ import build_parser

ADMIN_PASSWORD = "admin-pw-SECRET-42"
JWT = "eyJ.admin.jwt"


def ok(value: Any) -> Reply:
    return Reply(200, body={"result": {"status": True, "value": value}, "jsonrpc": "2.0", "id": 1})


def refused(status: int, code: int, message: str) -> Reply:
    return Reply(status, body={"result": {"status": False, "error": {"code": code, "message": message}}})


LOGIN = ok({"token": JWT, "role": "admin", "username": "admin"})
NO_TOKENS = ok({"tokens": [], "count": 0})


def token(serial: str, **fields: Any) -> dict[str, Any]:
    return {
        "serial": serial,
        "tokentype": "totp",
        "active": True,
        "failcount": 0,
        "maxfail": 10,
        "locked": False,
        "revoked": False,
        "rollout_state": "enrolled",
        **fields,
    }


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def server() -> Iterator[FaultServer]:
    with FaultServer() as fault_server:
        yield fault_server


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "pi-admin"
    path.write_text(ADMIN_PASSWORD + "\n")
    path.chmod(0o600)
    return path


def run(argv: list[str], env: dict[str, str], out: io.StringIO | None = None) -> tuple[int, str]:
    args = build_parser().parse_args(["mfa", *argv])
    out = out if out is not None else Tty()
    code = mfa.handle(args, out=out, environ=env)
    return code, out.getvalue()


def test_enrol_prints_the_setup_key_once_and_sends_the_password_only_to_auth(
    server: FaultServer, password_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server.script(LOGIN, NO_TOKENS, NO_TOKENS, ok(True))

    code, printed = run(
        ["enrol", "alice", "--admin-password-file", str(password_file)], {mfa.ENV_URL: server.url}
    )

    assert code == 0
    url_lines = [line for line in printed.splitlines() if "otpauth://" in line]
    assert len(url_lines) == 1
    query = parse_qs(urlsplit(url_lines[0].split("otpauth URL: ")[1]).query)
    seed = query["secret"][0]
    assert printed.count(seed) == 2  # the URL and the setup key, each once
    assert query["digits"] == ["6"]
    assert query["period"] == ["30"]
    assert len(base64.b32decode(seed)) == 20
    assert "TOTP-alice" in printed
    assert seed not in capsys.readouterr().err
    auth, by_user, by_serial, init = server.requests
    assert (auth.method, auth.path) == ("POST", "/auth")
    assert json.loads(auth.body) == {"username": "admin", "password": ADMIN_PASSWORD}
    for request in (by_user, by_serial, init):
        assert request.headers["PI-Authorization"] == JWT
        assert ADMIN_PASSWORD.encode() not in request.body
    assert by_user.path == "/token/?user=alice"
    assert by_serial.path == "/token/?serial=TOTP-alice"
    body = json.loads(init.body)
    assert (init.method, init.path) == ("POST", "/token/init")
    assert body["otpkey"] == base64.b32decode(seed).hex()
    assert (body["type"], body["genkey"], body["user"], body["serial"]) == ("totp", 0, "alice", "TOTP-alice")


def test_enrol_replaces_the_users_earlier_totp_tokens(server: FaultServer, password_file: Path) -> None:
    server.script(
        LOGIN, ok({"tokens": [token("TOTP-alice"), token("HOTP1", tokentype="hotp")]}), ok(1), ok(True)
    )

    code, printed = run(
        ["enrol", "alice", "--admin-password-file", str(password_file)], {mfa.ENV_URL: server.url}
    )

    assert code == 0
    assert "replaces TOTP-alice" in printed
    assert [(r.method, r.path) for r in server.requests][2:] == [
        ("DELETE", "/token/TOTP-alice"),
        ("POST", "/token/init"),
    ]


def test_enrol_refuses_to_print_the_seed_into_a_pipe(server: FaultServer, password_file: Path) -> None:
    code, printed = run(
        ["enrol", "alice", "--admin-password-file", str(password_file)],
        {mfa.ENV_URL: server.url},
        out=io.StringIO(),
    )

    assert code == 2
    assert printed == ""
    assert server.requests == []


def test_enrol_to_a_pipe_when_asked(server: FaultServer) -> None:
    server.script(LOGIN, NO_TOKENS, NO_TOKENS, ok(True))
    env = {mfa.ENV_URL: server.url, mfa.ENV_ADMIN_PASSWORD_VALUE: ADMIN_PASSWORD}
    code, printed = run(["enrol", "alice", "--to-pipe"], env, out=io.StringIO())
    assert code == 0
    assert "otpauth://totp/" in printed


def test_there_is_no_password_flag() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["mfa", "status", "alice", "--admin-password", "x"])


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_a_password_file_others_can_read_is_refused(
    server: FaultServer, password_file: Path, mode: int, capsys: pytest.CaptureFixture[str]
) -> None:
    password_file.chmod(mode)

    code, _ = run(["status", "alice", "--admin-password-file", str(password_file)], {mfa.ENV_URL: server.url})

    assert code == 2
    err = capsys.readouterr().err
    assert "chmod 600" in err
    assert ADMIN_PASSWORD not in err
    assert server.requests == []


def test_missing_credentials_say_where_to_put_them(
    server: FaultServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["status", "alice"], {mfa.ENV_URL: server.url})[0] == 2
    assert mfa.ENV_ADMIN_PASSWORD_VALUE in capsys.readouterr().err
    assert run(["status", "alice"], {mfa.ENV_ADMIN_PASSWORD_VALUE: ADMIN_PASSWORD})[0] == 2
    assert mfa.ENV_URL in capsys.readouterr().err
    missing = run(["status", "alice", "--admin-password-file", "/nonexistent/pw"], {mfa.ENV_URL: server.url})
    assert missing[0] == 2


def test_password_file_from_the_environment(server: FaultServer, password_file: Path) -> None:
    server.script(LOGIN, NO_TOKENS)
    env = {
        mfa.ENV_URL: server.url,
        mfa.ENV_ADMIN_PASSWORD_FILE: str(password_file),
        mfa.ENV_ADMIN_USER: "pi-admin",
    }
    code, printed = run(["status", "alice"], env)
    assert code == 0
    assert "alice has no token" in printed
    assert json.loads(server.requests[0].body)["username"] == "pi-admin"


def test_status_tells_locked_apart(server: FaultServer) -> None:
    tokens = [token("TOTP-alice", failcount=10), token("TOTP-old", active=False), token("TOTP-new")]
    server.script(LOGIN, ok({"tokens": tokens}))
    env = {mfa.ENV_URL: server.url, mfa.ENV_ADMIN_PASSWORD_VALUE: ADMIN_PASSWORD, mfa.ENV_REALM: "secops"}

    code, printed = run(["status", "alice"], env)

    assert code == 0
    lines = printed.splitlines()
    assert "locked: fail counter reached" in lines[0]
    assert lines[1].endswith("disabled")
    assert lines[2].endswith("ok")
    assert server.requests[1].path == "/token/?user=alice&realm=secops"


def test_reset(server: FaultServer) -> None:
    server.script(LOGIN, ok(1))
    code, printed = run(
        ["reset", "alice"], {mfa.ENV_URL: server.url, mfa.ENV_ADMIN_PASSWORD_VALUE: ADMIN_PASSWORD}
    )
    assert code == 0
    assert "1 token(s) of alice" in printed
    assert (server.requests[1].method, server.requests[1].path) == ("POST", "/token/reset")
    assert json.loads(server.requests[1].body) == {"user": "alice"}


def test_server_refusal_is_exit_1_with_its_message(
    server: FaultServer, capsys: pytest.CaptureFixture[str]
) -> None:
    server.script(LOGIN, refused(400, 904, "ERR904: User <carol@secops> does not exist."))
    code, _ = run(["reset", "carol"], {mfa.ENV_URL: server.url, mfa.ENV_ADMIN_PASSWORD_VALUE: ADMIN_PASSWORD})
    assert code == 1
    assert "ERR904" in capsys.readouterr().err


def test_wrong_admin_password_is_exit_1_without_the_password(
    server: FaultServer, capsys: pytest.CaptureFixture[str]
) -> None:
    server.script(refused(401, 4031, "Authentication failure. Wrong credentials"))
    code, _ = run(
        ["status", "alice"], {mfa.ENV_URL: server.url, mfa.ENV_ADMIN_PASSWORD_VALUE: ADMIN_PASSWORD}
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "Wrong credentials" in err
    assert ADMIN_PASSWORD not in err


def test_a_user_name_with_a_realm_is_refused_before_any_call(server: FaultServer) -> None:
    server.script(LOGIN)
    code, _ = run(
        ["reset", "alice@other"], {mfa.ENV_URL: server.url, mfa.ENV_ADMIN_PASSWORD_VALUE: ADMIN_PASSWORD}
    )
    assert code == 1
    assert [r.path for r in server.requests] == []


def test_registered_in_the_cli() -> None:
    args = build_parser().parse_args(["mfa", "status", "alice"])
    assert args.handler is mfa.handle
    assert args.mfa_command == "status"
