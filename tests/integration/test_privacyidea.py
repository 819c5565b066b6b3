"""The MFA server of approval answers on a real privacyIDEA 3.14 with a real OpenLDAP as its users.

Runs a slapd and a privacyIDEA of their own (profile ``mfa-itest``: slapd on 127.0.0.1:23489,
privacyIDEA on 127.0.0.1:26520), built fresh for this module and stopped at its end; never the
shared stacks. The hook reads its connection from ``AIRFLOW_CONN_MFA_ITEST`` (the JSON the local
Secrets Manager holds for ``mfa_default``). Codes come from pyotp with the seed :func:`enrol` kept;
a test that needs several codes takes distinct time steps inside the server's window, and each test
uses its own freshly enrolled user, so no test sees another's used steps or fail counts.
"""

from __future__ import annotations

import os
import tempfile

# Airflow reads its configuration when first imported: keep it away from any real installation.
if "AIRFLOW_HOME" not in os.environ:
    os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="orchestrator-itest-airflow-")
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

import base64
import itertools
import json
import logging
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import jwt
import ldap3
import pyotp
import pytest
import requests

from devstack import openldap, privacyidea, processes
from devstack.config import HOST, Profile
from include.connectors.errors import PermanentError, RetryBudgetExhausted, TransientError
from include.connectors.mfa import MfaHook, MfaVerdict

PROFILE = Profile(name="mfa-itest", api_port=26480, pg_port=0, moto_port=0, smtp_port=0, ldap_port=23489)
CONN_ID = "mfa_itest"
STEP = 30
START_BUDGET_SECONDS = 20.0
_UIDS = (f"mfa-user{n}" for n in itertools.count(1))


@pytest.fixture(scope="module")
def server() -> Iterator[Profile]:
    openldap.ensure_installed()
    installed = privacyidea.ensure_installed()
    openldap.initialise(PROFILE, fresh=True)
    openldap.start(PROFILE)
    began = time.monotonic()
    privacyidea.initialise(PROFILE, fresh=True)
    initialised = time.monotonic() - began
    healthy = privacyidea.start(PROFILE)
    ready = time.monotonic() - began
    print(
        f"\nprivacyIDEA of {PROFILE.name}: venv {installed:.1f}s, initialise {initialised:.1f}s, "
        f"cold start to /healthz/ {healthy:.2f}s, configured and ready {ready:.1f}s after initialise began"
    )
    assert healthy < START_BUDGET_SECONDS
    connection = privacyidea.mfa_connection(PROFILE)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(connection))
            yield PROFILE
    finally:
        privacyidea.stop(PROFILE)
        openldap.stop(PROFILE)


@pytest.fixture(scope="module")
def directory(server: Profile) -> Iterator[ldap3.Connection]:
    connection = ldap3.Connection(
        openldap.url(server), openldap.ADMIN_DN, openldap.admin_password(server), auto_bind=True
    )
    yield connection
    connection.unbind()


def _person_dn(uid: str) -> str:
    return f"uid={uid},{openldap.PEOPLE_OU},{openldap.SUFFIX}"


@pytest.fixture
def person(directory: ldap3.Connection) -> Callable[..., str]:
    """Make a directory person (inetOrgPerson) with a fresh uid; returns the uid."""

    def make(password: str | None = None) -> str:
        uid = next(_UIDS)
        attributes = {"uid": uid, "cn": uid, "sn": uid, **({"userPassword": password} if password else {})}
        assert directory.add(_person_dn(uid), ["inetOrgPerson"], attributes), directory.result
        return uid

    return make


@pytest.fixture
def enrolled(server: Profile, person: Callable[..., str]) -> Callable[[], tuple[str, pyotp.TOTP]]:
    """A directory person with a TOTP token just enrolled: (uid, its authenticator)."""

    def make() -> tuple[str, pyotp.TOTP]:
        uid = person()
        seed = privacyidea.enrol(server, uid)
        return uid, pyotp.TOTP(seed, interval=STEP)

    return make


@pytest.fixture
def hook(server: Profile) -> MfaHook:
    return MfaHook(CONN_ID)


def _away_from_step_edge(margin: float = 2.0) -> float:
    """Now, at least ``margin`` seconds from the next time step (a code computed now is still
    the same step's when the server checks it)."""
    now = time.time()
    if STEP - now % STEP < margin:
        time.sleep(STEP - now % STEP + 0.05)
        now = time.time()
    return now


def _code(totp: pyotp.TOTP, now: float, offset: int = 0) -> str:
    return str(totp.at(now + offset * STEP))


# --- verdicts -----------------------------------------------------------------------------------
def test_right_code_is_accepted_once_then_replay(
    hook: MfaHook, enrolled: Callable[[], tuple[str, pyotp.TOTP]]
) -> None:
    uid, totp = enrolled()
    now = _away_from_step_edge()
    code = _code(totp, now)

    first = hook.check(uid, code)
    again = hook.check(uid, code)

    assert (first.verdict, first.ok, first.serial) == (MfaVerdict.ACCEPT, True, f"TOTP-{uid}")
    assert again.verdict is MfaVerdict.REPLAY
    assert not again.ok
    assert "previous otp used again" in again.message
    assert code not in first.message + again.message


def test_a_backup_token_is_accepted_beside_the_token_and_a_replay_stays_refused(
    server: Profile, hook: MfaHook, enrolled: Callable[[], tuple[str, pyotp.TOTP]]
) -> None:
    uid, totp = enrolled()
    (backup_seed,) = privacyidea.enrol_backups(server, uid, 1)
    backup = pyotp.TOTP(backup_seed)
    now = _away_from_step_edge()
    assert hook.check(uid, _code(totp, now)).serial == f"TOTP-{uid}"
    code = _code(backup, now)
    accepted = hook.check(uid, code)
    assert (accepted.verdict, accepted.serial) == (MfaVerdict.ACCEPT, f"TOTP-{uid}-backup1")
    assert not hook.check(uid, code).ok  # each code once, whichever token it belongs to


def test_wrong_code_and_another_users_code_are_wrong(
    hook: MfaHook, enrolled: Callable[[], tuple[str, pyotp.TOTP]]
) -> None:
    alice, alice_totp = enrolled()
    bob, bob_totp = enrolled()
    now = _away_from_step_edge()
    alice_code = _code(alice_totp, now)
    wrong = f"{(int(_code(bob_totp, now)) + 1) % 1_000_000:06d}"

    assert hook.check(bob, wrong).verdict is MfaVerdict.WRONG
    assert hook.check(bob, alice_code).verdict is MfaVerdict.WRONG
    # Alice's code stays hers: it was not used up by the attempt on Bob's token.
    assert hook.check(alice, alice_code).verdict is MfaVerdict.ACCEPT


def test_window_is_two_steps_back_and_one_ahead(
    hook: MfaHook, enrolled: Callable[[], tuple[str, pyotp.TOTP]]
) -> None:
    uid, totp = enrolled()
    now = _away_from_step_edge()
    assert hook.check(uid, _code(totp, now, privacyidea.STEPS_AHEAD + 1)).verdict is MfaVerdict.WRONG
    assert hook.check(uid, _code(totp, now, -privacyidea.STEPS_BACK - 1)).verdict is MfaVerdict.WRONG
    assert hook.check(uid, _code(totp, now, -privacyidea.STEPS_BACK)).verdict is MfaVerdict.ACCEPT

    other, other_totp = enrolled()
    now = _away_from_step_edge()
    assert hook.check(other, _code(other_totp, now, privacyidea.STEPS_AHEAD)).verdict is MfaVerdict.ACCEPT


def test_an_accepted_code_does_not_move_the_window(
    hook: MfaHook, enrolled: Callable[[], tuple[str, pyotp.TOTP]]
) -> None:
    """privacyIDEA would learn a drift from a late (or early) code and leave the current code
    outside the window; the stack's event handler resets it after every success."""
    late, late_totp = enrolled()
    early, early_totp = enrolled()
    now = _away_from_step_edge(margin=3)

    assert hook.check(late, _code(late_totp, now, -privacyidea.STEPS_BACK)).verdict is MfaVerdict.ACCEPT
    assert hook.check(late, _code(late_totp, now)).verdict is MfaVerdict.ACCEPT
    assert hook.check(early, _code(early_totp, now, privacyidea.STEPS_AHEAD)).verdict is MfaVerdict.ACCEPT
    assert hook.check(early, _code(early_totp, now, privacyidea.STEPS_AHEAD + 1)).verdict is MfaVerdict.WRONG


def test_user_without_token_and_unknown_user(hook: MfaHook, person: Callable[..., str]) -> None:
    uid = person()

    no_token = hook.check(uid, "123456")
    unknown = hook.check("nobody-here", "123456")

    assert no_token.verdict is MfaVerdict.NO_TOKEN
    assert unknown.verdict is MfaVerdict.UNKNOWN_USER
    assert "nobody-here" in unknown.message


def test_malformed_code_is_decided_without_counting_a_failure(
    server: Profile, hook: MfaHook, enrolled: Callable[[], tuple[str, pyotp.TOTP]]
) -> None:
    uid, _ = enrolled()
    for code in ("", "12345", "1234567", "12345a", "\uff11\uff12\uff13\uff14\uff15\uff16", "123 456"):
        assert hook.check(uid, code).verdict is MfaVerdict.MALFORMED
    (token,) = privacyidea.admin(server).tokens(uid)
    assert token.failcount == 0


def test_ten_failures_lock_the_token_and_reset_clears_it(
    server: Profile, hook: MfaHook, enrolled: Callable[[], tuple[str, pyotp.TOTP]]
) -> None:
    uid, totp = enrolled()
    # The default margin is enough (it was 10 s: a third of the time this test slept up to 10 s).
    # ``right`` (step s) need not stay the current step's: a right code on a locked token is what
    # makes "Failcounter exceeded" (a wrong one is just wrong), and it stays inside the window (two
    # steps back) for at least 62 s; the step after it, checked last, for at least 92 s.
    now = _away_from_step_edge()
    right = _code(totp, now)
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"
    verdicts = [hook.check(uid, wrong).verdict for _ in range(10)]
    assert verdicts == [MfaVerdict.WRONG] * 10

    locked = hook.check(uid, right)
    assert locked.verdict is MfaVerdict.LOCKED, locked
    assert "Failcounter exceeded" in locked.message
    assert privacyidea.admin(server).tokens(uid)[0].fail_locked

    assert privacyidea.reset_failcounter(server, uid) == 1
    assert hook.check(uid, _code(totp, now, 1)).verdict is MfaVerdict.ACCEPT


def test_re_enrolment_replaces_the_token(server: Profile, hook: MfaHook, person: Callable[..., str]) -> None:
    uid = person()
    first = pyotp.TOTP(privacyidea.enrol(server, uid), interval=STEP)
    second_seed = privacyidea.enrol(server, uid)
    now = _away_from_step_edge()

    assert second_seed != first.secret
    assert privacyidea.seed(server, uid) == second_seed
    assert oct(privacyidea.seed_file(server, uid).stat().st_mode & 0o777) == "0o600"
    assert [t.serial for t in privacyidea.admin(server).tokens(uid)] == [f"TOTP-{uid}"]
    assert hook.check(uid, _code(first, now)).verdict is MfaVerdict.WRONG
    assert hook.check(uid, _code(pyotp.TOTP(second_seed, interval=STEP), now)).verdict is MfaVerdict.ACCEPT


# --- who else can reach it ------------------------------------------------------------------------
def test_validate_check_needs_the_validate_key(
    server: Profile, enrolled: Callable[[], tuple[str, pyotp.TOTP]]
) -> None:
    uid, totp = enrolled()
    code = _code(totp, _away_from_step_edge())
    endpoint = f"{privacyidea.url(server)}/validate/check"
    forged = jwt.encode(
        {"username": "airflow", "realm": "API", "role": "validate"}, "not-the-secret-key-0123456789abcdef"
    )
    admin_jwt = privacyidea.admin(server).token

    for headers in ({}, {"Authorization": forged}, {"PI-Authorization": admin_jwt}):
        response = requests.post(endpoint, data={"user": uid, "pass": code}, headers=headers, timeout=5)
        assert response.status_code == 403, (headers.keys(), response.text)
        assert response.json()["result"]["error"]["code"] == 303
    # The refused calls did not use the code up.
    key = privacyidea.validate_key(server)
    response = requests.post(
        endpoint, data={"user": uid, "pass": code}, headers={"PI-Authorization": key}, timeout=5
    )
    assert response.json()["result"]["value"] is True


def test_the_validate_key_opens_no_admin_call(
    server: Profile, enrolled: Callable[[], tuple[str, pyotp.TOTP]]
) -> None:
    """The Airflow API server holds the validate key: with it, nobody can enrol, reset or list."""
    uid, _ = enrolled()
    key = privacyidea.validate_key(server)
    calls = [
        ("GET", "/token/", None),
        ("POST", "/token/init", {"type": "totp", "genkey": 1, "user": uid}),
        ("POST", "/token/reset", {"user": uid}),
        ("GET", "/user/", None),
        ("POST", "/policy/open-up", {"scope": "admin", "action": "enrollTOTP"}),
        ("POST", "/validate/triggerchallenge", {"user": uid}),
    ]
    for method, path, body in calls:
        response = requests.request(
            method,
            f"{privacyidea.url(server)}{path}",
            json=body,
            headers={"PI-Authorization": key},
            timeout=10,
        )
        assert response.status_code == 401, (method, path, response.text)
    assert [t.serial for t in privacyidea.admin(server).tokens(uid)] == [f"TOTP-{uid}"]


def test_hook_with_a_wrong_key_is_a_permanent_error(
    server: Profile, monkeypatch: pytest.MonkeyPatch, enrolled: Callable[[], tuple[str, pyotp.TOTP]]
) -> None:
    uid, totp = enrolled()
    connection = {**privacyidea.mfa_connection(server), "password": "not-a-key"}
    monkeypatch.setenv("AIRFLOW_CONN_MFA_WRONG_KEY", json.dumps(connection))

    with pytest.raises(PermanentError) as raised:
        MfaHook("mfa_wrong_key").check(uid, _code(totp, time.time()))

    assert raised.value.status == 403
    assert "validate API key" in str(raised.value)


def test_directory_users_cannot_log_in_to_privacyidea(server: Profile, person: Callable[..., str]) -> None:
    """Else a stolen directory password alone could enrol a token of the attacker's choosing."""
    password = "right-password-123456"
    uid = person(password)
    for attempt in (password, "wrong-password-123456"):
        response = requests.post(
            f"{privacyidea.url(server)}/auth", json={"username": uid, "password": attempt}, timeout=10
        )
        assert response.status_code == 403, response.text
        assert "token" not in json.dumps(response.json().get("result", {}))


def test_server_down_is_transient_and_not_a_verdict(
    server: Profile, enrolled: Callable[[], tuple[str, pyotp.TOTP]]
) -> None:
    uid, totp = enrolled()
    connection = {**privacyidea.mfa_connection(server), "port": PROFILE.api_port + 41}  # nothing there
    connection["extra"] = {**connection["extra"], "retry_base_delay": 0.01, "retry_max_delay": 0.02}  # type: ignore[dict-item]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AIRFLOW_CONN_MFA_NOWHERE", json.dumps(connection))
        hook = MfaHook("mfa_nowhere")
        with pytest.raises(RetryBudgetExhausted) as raised:
            hook.check(uid, _code(totp, time.time()))
    assert isinstance(raised.value.__cause__, TransientError)
    assert hook.retry_count == 2  # connection refused: nothing was sent, so retried (3 attempts)


def test_listens_on_loopback_only(server: Profile) -> None:
    listening = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, port = fields[1].split(":")
            if fields[3] == "0A" and int(port, 16) == server.mfa_port:
                listening.append(address)
    assert listening == ["0100007F"]  # 127.0.0.1, and nothing on ::


def test_seeds_never_reach_a_log(
    server: Profile, hook: MfaHook, person: Callable[..., str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    uid = person()
    seed = privacyidea.enrol(server, uid)
    totp = pyotp.TOTP(seed, interval=STEP)
    hook.check(uid, _code(totp, _away_from_step_edge()))
    hook.check(uid, "000000")
    hex_seed = base64.b32decode(seed).hex()
    logs = [path for path in server.logs.iterdir() if path.is_file()]
    assert privacyidea.app_log(server) in logs
    for path in logs:
        text = path.read_text(errors="replace")
        assert seed not in text, path
        assert hex_seed not in text, path
    assert seed not in caplog.text
    assert hex_seed not in caplog.text
    assert privacyidea.validate_key(server) not in caplog.text


def test_check_latency(hook: MfaHook, enrolled: Callable[[], tuple[str, pyotp.TOTP]]) -> None:
    """p50 of /validate/check through the hook: 20 right codes (4 distinct steps of 5 users)."""
    users = [enrolled() for _ in range(5)]
    timings: dict[str, list[float]] = {"accept": [], "wrong": []}
    for uid, totp in users:
        now = _away_from_step_edge(margin=4)  # each user's 5 calls within one step
        for offset in (-2, -1, 0, 1):
            began = time.perf_counter()
            result = hook.check(uid, _code(totp, now, offset))
            timings["accept"].append(time.perf_counter() - began)
            assert result.verdict is MfaVerdict.ACCEPT, (offset, result)
        began = time.perf_counter()
        assert hook.check(uid, _code(totp, now, -2)).verdict in (MfaVerdict.WRONG, MfaVerdict.REPLAY)
        timings["wrong"].append(time.perf_counter() - began)
    p50 = statistics.median(timings["accept"]) * 1000
    worst = max(timings["accept"]) * 1000
    refused = statistics.median(timings["wrong"]) * 1000
    print(
        f"\n/validate/check via MfaHook: accept p50 {p50:.0f} ms (n={len(timings['accept'])}, "
        f"max {worst:.0f} ms), refused p50 {refused:.0f} ms"
    )
    assert p50 < 1000


def test_stop_ends_the_server_by_its_pid(server: Profile) -> None:
    """Last in this module: the server is stopped here (the fixture's stop is then a no-op)."""
    pid = processes.running_pid(privacyidea.SERVICE_NAME, pids_dir=server.pids)
    assert pid is not None
    assert privacyidea.is_running(server)

    assert privacyidea.stop(server) is True

    assert not processes.is_running(pid)
    assert not privacyidea.is_running(server)
    assert not processes.port_open(HOST, server.mfa_port)
    assert privacyidea.stop(server) is False
