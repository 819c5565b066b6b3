"""The second factor of an approval answer in the approval door (issue 20), with the MFA server faked
at its interface (its real behaviour: tests/integration/test_privacyidea.py; end to end:
tests/e2e/test_approval_mfa.py)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from starlette.testclient import TestClient

from include.approvals import door as door_module
from include.approvals import second_factor
from include.approvals.second_factor import AnswerTarget, answer_target, take_code
from include.auth.middleware import ApprovalDoorMiddleware, request_token
from tests.unit.approvals.test_door import BASE, DAG, GATE, RUN, Airflow, FakeLookup

ANSWER = f"{BASE}/taskInstances/{GATE}/-1/hitlDetails"
GOOD = "582914"  # not a substring of the fake lookup's correlation id


class FakeMfa:
    """privacyIDEA's verdicts at the hook's interface: one good code per user, used once."""

    def __init__(self) -> None:
        self.codes = {"lena_soc_lead": GOOD, "omar_soc_lead": "654321"}
        self.used: set[tuple[str, str]] = set()
        self.asked: list[tuple[str, str]] = []
        self.down = False

    def __call__(self, username: str, code: str) -> tuple[str, str, str | None]:
        self.asked.append((username, code))
        if self.down:
            raise ConnectionError("privacyidea at http://127.0.0.1:18120: connection refused")
        if len(code) != 6 or not code.isdigit():
            return "malformed", "", None
        if self.codes.get(username) != code:
            return "wrong", "wrong otp value", None
        if (username, code) in self.used:
            return "replay", "wrong otp value. previous otp used again", None
        self.used.add((username, code))
        return "accept", "matching 1 tokens", f"TOTP_{username}"


@pytest.fixture
def door() -> dict[str, Any]:
    airflow = Airflow()
    records: list[dict[str, Any]] = []
    mfa = FakeMfa()

    async def resolve_user(scope: Any) -> str | None:
        return {"lena-token": "lena_soc_lead", "omar-token": "omar_soc_lead"}.get(request_token(scope) or "")

    app = ApprovalDoorMiddleware(
        airflow.app(), lookup=FakeLookup(), resolve_user=resolve_user, audit=records.append, check_code=mfa
    )
    return {"client": TestClient(app), "airflow": airflow, "records": records, "mfa": mfa}


def _answer(door: dict[str, Any], token: str | None, params_input: Any = None, **body: Any) -> Any:
    payload: dict[str, Any] = {"chosen_options": ["Approve"], **body}
    if params_input is not None:
        payload["params_input"] = params_input
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return door["client"].patch(ANSWER, json=payload, headers=headers)


def test_a_right_code_lets_the_answer_through_without_the_code_and_is_recorded(door: dict[str, Any]) -> None:
    response = _answer(door, "lena-token", {"comment": "contain it", "otp": GOOD})
    assert response.status_code == 200
    (seen,) = door["airflow"].seen
    assert json.loads(seen["body"]) == {
        "chosen_options": ["Approve"],
        "params_input": {"comment": "contain it"},
    }
    assert GOOD.encode() not in seen["body"]
    (record,) = door["records"]
    assert record["kind"] == "approval.second_factor"
    assert (record["actor"], record["dag_id"], record["run_id"], record["task_id"]) == (
        "lena_soc_lead",
        DAG,
        RUN,
        GATE,
    )
    assert record["details"] == {"method": "totp", "token_serial": "TOTP_lena_soc_lead", "verdict": "accept"}
    assert GOOD not in json.dumps(door["records"])


@pytest.mark.parametrize(
    ("token", "params_input", "verdict"),
    [
        pytest.param("lena-token", {"comment": "ok"}, "missing", id="no-code"),
        pytest.param("lena-token", None, "missing", id="no-params"),
        pytest.param("lena-token", {"otp": 123456}, "missing", id="code-not-a-string"),
        pytest.param("lena-token", {"otp": ""}, "malformed", id="empty-code"),
        pytest.param("lena-token", {"otp": "12345a"}, "malformed", id="not-digits"),
        pytest.param("lena-token", {"otp": "000000"}, "wrong", id="wrong-code"),
        pytest.param("omar-token", {"otp": GOOD}, "wrong", id="another-users-code"),
    ],
)
def test_a_bad_code_is_403_reaches_nothing_and_is_one_policy_violation(
    door: dict[str, Any], token: str, params_input: Any, verdict: str
) -> None:
    response = _answer(door, token, params_input)
    assert response.status_code == 403
    body = response.json()
    assert (body["rule"], body["verdict"], body["task_id"]) == ("second-factor", verdict, GATE)
    assert body["detail"].startswith(f"Answer refused: second factor failed ({verdict}).")
    assert door["airflow"].seen == []
    (record,) = door["records"]
    assert (record["kind"], record["subject"], record["task_id"]) == (
        "policy.violation",
        "approval answer refused",
        GATE,
    )
    assert record["details"]["rule"] == "second-factor"
    assert record["details"]["verdict"] == verdict
    assert GOOD not in json.dumps(record)


def test_a_reused_code_is_refused(door: dict[str, Any]) -> None:
    assert _answer(door, "lena-token", {"otp": GOOD}).status_code == 200
    replay = _answer(door, "lena-token", {"otp": GOOD})
    assert replay.status_code == 403
    assert replay.json()["verdict"] == "replay"
    assert "used already" in replay.json()["detail"]
    assert len(door["airflow"].seen) == 1
    assert [r["kind"] for r in door["records"]] == ["approval.second_factor", "policy.violation"]


def test_the_code_is_checked_for_the_tokens_user_whatever_the_body_claims(door: dict[str, Any]) -> None:
    response = _answer(door, "omar-token", {"otp": GOOD}, responded_by="lena_soc_lead")
    assert response.status_code == 403
    assert door["mfa"].asked == [("omar_soc_lead", GOOD)]


def test_an_unreachable_mfa_server_refuses_with_503_and_changes_nothing(door: dict[str, Any]) -> None:
    door["mfa"].down = True
    response = _answer(door, "lena-token", {"otp": GOOD})
    assert response.status_code == 503
    assert "could not check your one-time code" in response.json()["detail"]
    assert door["airflow"].seen == []


def test_unauthenticated_answers_are_left_to_airflow_unread(door: dict[str, Any]) -> None:
    response = _answer(door, None, {"otp": GOOD})
    assert response.status_code == 200  # the stand-in has no auth; Airflow answers 401
    assert door["mfa"].asked == []
    assert door["records"] == []


def test_an_answer_airflow_refuses_is_not_recorded_as_verified(door: dict[str, Any]) -> None:
    door["airflow"].status = 409  # answered already
    response = _answer(door, "lena-token", {"otp": GOOD})
    assert response.status_code == 409
    assert [r["kind"] for r in door["records"]] == ["api.refused"]


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("PATCH", ANSWER, AnswerTarget(DAG, RUN, GATE, "-1")),
        ("PATCH", f"{BASE}/taskInstances/{GATE}/3/hitlDetails", AnswerTarget(DAG, RUN, GATE, "3")),
        ("GET", ANSWER, None),
        ("PATCH", f"{BASE}/taskInstances/{GATE}", None),
        ("PATCH", f"{BASE}/taskInstances/{GATE}//hitlDetails", None),
        ("PATCH", f"/execution/hitlDetails/{GATE}", None),
    ],
)
def test_answer_target(method: str, path: str, expected: AnswerTarget | None) -> None:
    assert answer_target(method, path) == expected


def test_take_code_keeps_everything_else_and_leaves_non_json_alone() -> None:
    taken = take_code(
        json.dumps({"chosen_options": ["Reject"], "params_input": {"otp": "1", "x": 2}}).encode()
    )
    assert taken.code == "1"
    assert json.loads(taken.body) == {"chosen_options": ["Reject"], "params_input": {"x": 2}}
    assert take_code(b"not json") == second_factor.TakenCode(None, b"not json")


def test_the_door_and_the_second_factor_watch_the_same_api_prefix() -> None:
    assert second_factor.API_PREFIX == door_module.API_PREFIX
