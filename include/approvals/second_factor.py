"""The second factor of an approval answer (issue 20): a fresh one-time code with every answer.

An answer to an approval request (``PATCH /api/v2/dags/{dag}/dagRuns/{run}/taskInstances/{task}/
{map_index}/hitlDetails``, which is also what the UI's Required actions form sends) carries the
approver's current TOTP code in ``params_input.otp`` (the gate declares the field, so the form shows
it). The approval door (:mod:`include.auth.middleware`) takes the code out of the body, has the MFA
server (privacyIDEA, :mod:`include.connectors.mfa`) check it for the user of the request's token,
and only then lets Airflow see the answer, without the code: a wrong, reused, missing or foreign
code is refused with 403 before anything changes, and the code never reaches the metadata DB.

This module is the pure part: which requests are answers, taking the code out of a body, and what a
refused approver is told.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

# include.approvals.door.API_PREFIX; not imported, because the door imports the gate
# (door -> guarded -> operators.approval) and the gate imports OTP_FIELD from here.
API_PREFIX: Final = "/api/v2/dags/"
OTP_FIELD: Final = "otp"
RULE: Final = "second-factor"
METHOD: Final = "totp"

# What the approver reads, per verdict of include.connectors.mfa (never the code itself).
ADVICE: Final = {
    "missing": "Enter the 6-digit code of your authenticator app in the 'One-time code' field.",
    "malformed": "The one-time code is the 6 digits your authenticator app shows now.",
    "wrong": "That code is not the current code of your authenticator. Wait for the next code and try again.",
    "replay": "That code was used already. Wait for your authenticator's next code and try again.",
    "locked": (
        "Your authenticator is locked after too many wrong codes. Ask a platform admin to reset it "
        "(python -m include.cli mfa reset <user>)."
    ),
    "no-token": (
        "You have no authenticator enrolled. Ask a platform admin to enrol one "
        "(python -m include.cli mfa enrol <user>)."
    ),
    "unknown-user": "Your account is not known to the MFA server; approval answers need a directory account.",
}
UNAVAILABLE_DETAIL: Final = (
    "The MFA server could not check your one-time code, so your answer was not recorded. Try again "
    "with the next code."
)


@dataclass(frozen=True)
class AnswerTarget:
    """The approval request an answer is for."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: str


def answer_target(method: str, path: str) -> AnswerTarget | None:
    """The request ``method path`` answers, or ``None`` when it is not an approval answer."""
    if method != "PATCH" or not path.startswith(API_PREFIX) or not path.endswith("/hitlDetails"):
        return None
    parts = path[len(API_PREFIX) :].split("/")
    # {dag}/dagRuns/{run}/taskInstances/{task}/{map_index}/hitlDetails
    if len(parts) != 7 or parts[1] != "dagRuns" or parts[3] != "taskInstances" or not all(parts):
        return None
    return AnswerTarget(parts[0], parts[2], parts[4], parts[5])


@dataclass(frozen=True)
class TakenCode:
    """The code an answer carried (``None``: none) and the body Airflow gets instead (no code)."""

    code: str | None
    body: bytes


def take_code(body: bytes) -> TakenCode:
    """Take ``params_input.otp`` out of an answer's JSON body.

    A body that is not a JSON object is handed on as it is (Airflow refuses it with 422); its code is
    ``None``, so such a request is refused here first anyway.
    """
    try:
        payload: Any = json.loads(body or b"null")
    except ValueError:
        return TakenCode(None, body)
    if not isinstance(payload, dict):
        return TakenCode(None, body)
    params = payload.get("params_input")
    if not isinstance(params, dict) or OTP_FIELD not in params:
        return TakenCode(None, body)
    params = dict(params)
    code = params.pop(OTP_FIELD)
    payload["params_input"] = params
    return TakenCode(code if isinstance(code, str) else None, json.dumps(payload).encode("utf-8"))


def refusal_detail(verdict: str, server_message: str) -> str:
    advice = ADVICE.get(verdict, "The one-time code was not accepted.")
    return f"Answer refused: second factor failed ({verdict}). {advice}" + (
        f" MFA server: {server_message}" if server_message and verdict not in ("missing", "malformed") else ""
    )
