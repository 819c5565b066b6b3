"""privacyIDEA, the MFA server that checks the one-time code of every approval answer (issue 20).

Two clients, one module, so every HTTP call to privacyIDEA is made here:

- :class:`MfaHook` (connection ``mfa_default``): :meth:`MfaHook.check` asks ``POST /validate/check``
  whether a 6-digit TOTP code is the current code of a directory user's token and returns an
  :class:`MfaResult` (a :class:`MfaVerdict` and privacyIDEA's own message, never the code). It runs
  inside the Airflow API server (the approval door, :mod:`include.auth.middleware`): imports stay
  light (``requests`` only when a request is made).
- :class:`PrivacyIdeaAdmin`: the admin API (``/auth``, ``/token/init``, ``/token/reset``,
  ``/token/``, ``/resolver``, ``/realm``, ``/policy``, ``/system``) for enrolment
  (``python -m include.cli mfa``) and for the local stack's setup (``devstack/privacyidea.py``).

A code is consumed by the server when it is checked: ``/validate/check`` records the token's last
used time step, so the same code (and every older one) is refused afterwards, and every failure
counts against the token's fail counter (10 by default; then every code, even the right one, is
refused until an admin resets it). So a check is never retried once its request may have reached
the server: a read timeout, a dropped connection after sending or a 5xx raises
:class:`~include.connectors.errors.TransientError` at once (the approver tries again with the next
code). Only a request that provably never left (connection refused, connect timeout) is retried, a
few times within a few seconds (an approver is waiting). A code that is not exactly 6 ASCII digits
is :attr:`MfaVerdict.MALFORMED` without a call (it would only feed the fail counter).

Connection ``mfa_default``: conn_type http, host, port, schema (``http`` on loopback, ``https``
anywhere else), password = the validate API key (a JWT of role ``validate``, sent in
``PI-Authorization``: the server's ``api_key_required`` policy refuses a check without it, so
nobody who merely reaches the port can test codes). Extras: ``realm`` (the directory users' realm;
default: the server's default realm), ``timeout_seconds`` (default 5) and the base's rate-limit and
retry extras (see :class:`~include.connectors.base.ConnectorHook`; retry defaults here: 3 attempts
within 3 s). The key is never logged nor part of an error.

privacyIDEA's answers (3.14; measured, see shared notes): 200 with ``result.value`` true and
``result.authentication`` ``ACCEPT`` is a right code; 200 with value false carries
``detail.message``: ``wrong otp value`` (WRONG), ``wrong otp value. previous otp used again``
(REPLAY), ``Failcounter exceeded`` / ``Token is disabled`` / ... (LOCKED), ``The user has no tokens
assigned`` (NO_TOKEN); an unknown user is HTTP 400 with error code 904 (UNKNOWN_USER).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar, Final, NoReturn
from urllib.parse import quote

from include.connectors.base import USER_AGENT, HttpConnectorHook
from include.connectors.errors import PermanentError, TransientError

if TYPE_CHECKING:
    import requests

SYSTEM: Final = "privacyidea"
DEFAULT_CONN_ID: Final = "mfa_default"
# The staff account (include.policies.tenants.STAFF_TENANT): approvers are staff; not imported,
# to keep the API server's import of this module light.
DEFAULT_TENANT: Final = "secops"
CHECK_PATH: Final = "validate/check"
# [0-9], not \d: \d also matches other scripts' digits, which privacyIDEA would only count as a failure.
CODE_PATTERN: Final = re.compile(r"[0-9]{6}")
# A directory uid (include.connectors.ldap.UID_PATTERN) or a local account name: no "@" (privacyIDEA
# would split "user@realm" and look in another realm), no blanks, no control characters.
USERNAME_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# privacyIDEA error codes.
ERR_USER_UNKNOWN: Final = 904
ERR_POLICY: Final = 303
# An approver is waiting: fail within seconds rather than the base's two minutes of retries.
DEFAULT_EXTRAS: Final[Mapping[str, Any]] = {
    "timeout_seconds": 5,
    "retry_max_attempts": 3,
    "retry_base_delay": 0.2,
    "retry_max_delay": 1.0,
    "retry_budget_seconds": 3.0,
}
# detail.message fragments of a refused code whose token cannot be used until an admin acts.
_LOCKED_MESSAGES: Final = (
    "failcounter exceeded",
    "token is disabled",
    "authentication counter exceeded",
    "outside validity period",
    "token is not yet enrolled",
    "revoked",
    "locked",
)


class MfaVerdict(StrEnum):
    """What the MFA server made of a code (the values are what the approval door reports)."""

    ACCEPT = "accept"
    WRONG = "wrong"
    REPLAY = "replay"
    LOCKED = "locked"
    NO_TOKEN = "no-token"  # noqa: S105  # policy: allow-literal a verdict, not a token
    UNKNOWN_USER = "unknown-user"
    MALFORMED = "malformed"


@dataclass(frozen=True)
class MfaResult:
    """A verdict and the server's own message (never the code); ``serial``: the token that matched
    (or was tried), when the server names it."""

    verdict: MfaVerdict
    message: str
    serial: str | None = None

    @property
    def ok(self) -> bool:
        return self.verdict is MfaVerdict.ACCEPT


class _NotRetried(Exception):
    """Carries an error that must not be retried (the request may have reached the server)."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def _never_sent(exc: Exception) -> bool:
    """True when the request provably did not leave: the TCP connection was never established."""
    import requests
    from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, NewConnectionError

    if isinstance(exc, requests.ConnectTimeout):
        return True
    if isinstance(exc, requests.ConnectionError) and exc.args:
        reason = exc.args[0].reason if isinstance(exc.args[0], MaxRetryError) else exc.args[0]
        return isinstance(reason, NewConnectionError | ConnectTimeoutError)
    return False


def _json(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _error_of(body: Mapping[str, Any]) -> tuple[int | None, str]:
    """privacyIDEA's ``result.error`` as (code, message)."""
    result = body.get("result")
    error = result.get("error") if isinstance(result, dict) else None
    if not isinstance(error, dict):
        return None, ""
    code = error.get("code")
    return (code if isinstance(code, int) else None), str(error.get("message", ""))[:500]


def classify(message: str) -> MfaVerdict:
    """The verdict of a refused code (HTTP 200, ``result.value`` false) from ``detail.message``."""
    text = message.lower()
    if "previous otp used again" in text:
        return MfaVerdict.REPLAY
    if "has no tokens assigned" in text:
        return MfaVerdict.NO_TOKEN
    if any(fragment in text for fragment in _LOCKED_MESSAGES):
        return MfaVerdict.LOCKED
    return MfaVerdict.WRONG


class MfaHook(HttpConnectorHook):
    """Checks approvers' one-time codes with privacyIDEA. See the module's doc.

    :param conn_id: default ``mfa_default``.
    :param tenant: the rate-limit bucket's tenant; default the staff account (approvers are staff).
    """

    system: ClassVar[str] = SYSTEM
    default_conn_name = DEFAULT_CONN_ID
    conn_type = "http"
    hook_name = "privacyIDEA (MFA)"

    def __init__(self, conn_id: str | None = None, *, tenant: str = DEFAULT_TENANT, **kwargs: Any) -> None:
        super().__init__(conn_id, tenant=tenant, **kwargs)

    @cached_property
    def extras(self) -> dict[str, Any]:
        return {**DEFAULT_EXTRAS, **dict(self.connection.extra_dejson)}

    @cached_property
    def realm(self) -> str | None:
        realm = self.extras.get("realm")
        return str(realm) if realm else None

    def auth_headers(self) -> dict[str, str]:
        key = self.connection.password
        if not key:
            raise PermanentError(
                f"connection {self.conn_id} has no password: it must hold privacyIDEA's validate API key",
                system=self.system,
                operation="validate_check",
            )
        return {"PI-Authorization": key}

    # --- the check ------------------------------------------------------------------------------
    def check(self, username: str, code: str) -> MfaResult:
        """Whether ``code`` is the current TOTP code of ``username``'s token (consumes it if so).

        :raises TransientError: the server could not answer (down, timeout, 5xx): nothing is known
            about the code, and it was not retried if it may have reached the server.
        :raises PermanentError: the server refused the request itself (our validate key, a 4xx).
        """
        if not isinstance(code, str) or not CODE_PATTERN.fullmatch(code):
            return MfaResult(MfaVerdict.MALFORMED, "the one-time code must be exactly 6 digits")
        if not isinstance(username, str) or not USERNAME_PATTERN.fullmatch(username):
            return MfaResult(MfaVerdict.UNKNOWN_USER, "not a user name the MFA server can check")
        data = {"user": username, "pass": code}
        if self.realm:
            data["realm"] = self.realm
        try:
            response = self.call("validate_check", lambda: self._post_once(data))
        except _NotRetried as wrapped:
            raise wrapped.error from None
        return self._verdict(response, code)

    def _post_once(self, data: Mapping[str, str]) -> requests.Response:
        """One POST /validate/check. Only a request that never left raises TransientError (retried
        by :meth:`call`); everything after sending raises :class:`_NotRetried`."""
        import requests

        operation = "validate_check"
        url = f"{self.base_url}/{CHECK_PATH}"
        try:
            # A form body, as privacyIDEA's own clients send it; no redirects (the key stays here).
            response = self.session.post(url, data=dict(data), timeout=self.timeout, allow_redirects=False)
        except (requests.ConnectionError, requests.Timeout) as exc:
            if _never_sent(exc):
                raise TransientError(
                    f"could not connect to {self.base_url} ({type(exc).__name__}); nothing was sent",
                    system=self.system,
                    operation=operation,
                ) from None
            raise _NotRetried(
                TransientError(
                    f"{type(exc).__name__} after sending POST /{CHECK_PATH}: the code may have been "
                    "used up; not retried",
                    system=self.system,
                    operation=operation,
                )
            ) from None
        if response.status_code == 200 or (response.status_code == 400 and self._unknown_user(response)):
            return response
        self._raise_for_check(response, operation)

    @staticmethod
    def _unknown_user(response: requests.Response) -> bool:
        return _error_of(_json(response))[0] == ERR_USER_UNKNOWN

    def _raise_for_check(self, response: requests.Response, operation: str) -> NoReturn:
        status = response.status_code
        code, server_message = _error_of(_json(response))
        detail = server_message or response.reason or "no message"
        message = f"POST /{CHECK_PATH} -> HTTP {status}: {detail}"
        if status == 429:
            # Refused before it was processed: the code is still unused, so this one may be retried.
            from include.connectors.retry import parse_retry_after

            raise TransientError(
                message,
                system=self.system,
                operation=operation,
                status=status,
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
            )
        if status >= 500:
            raise _NotRetried(
                TransientError(
                    f"{message}; the code may have been used up, not retried",
                    system=self.system,
                    operation=operation,
                    status=status,
                )
            )
        if status in (401, 403) or code == ERR_POLICY:
            message += f" (is the password of connection {self.conn_id} privacyIDEA's validate API key?)"
        raise _NotRetried(PermanentError(message, system=self.system, operation=operation, status=status))

    def _verdict(self, response: requests.Response, code: str) -> MfaResult:
        body = _json(response)

        def scrub(text: str) -> str:  # the server never echoes the code; make sure of it
            return text.replace(code, "******")[:500]

        if response.status_code == 400:
            return MfaResult(MfaVerdict.UNKNOWN_USER, scrub(_error_of(body)[1]))
        result = body.get("result")
        found = body.get("detail")
        detail: dict[str, Any] = found if isinstance(found, dict) else {}
        if not isinstance(result, dict) or not result.get("status") or "value" not in result:
            raise PermanentError(
                f"POST /{CHECK_PATH} -> HTTP 200 without result.status/value: not privacyIDEA's answer",
                system=self.system,
                operation="validate_check",
                status=200,
            )
        message = scrub(str(detail.get("message", "")))
        serial = detail.get("serial")
        serial = str(serial) if serial else None
        if result.get("value") is True and result.get("authentication", "ACCEPT") == "ACCEPT":
            return MfaResult(MfaVerdict.ACCEPT, message, serial)
        return MfaResult(classify(message), message, serial)


# --- the admin API ------------------------------------------------------------------------------
class MfaAdminError(PermanentError):
    """privacyIDEA refused or failed an admin call; the message names the call and the server's words."""

    def __init__(self, message: str, *, operation: str, status: int | None = None) -> None:
        super().__init__(message, system=SYSTEM, operation=operation, status=status)


TOTP_SERIAL_PREFIX: Final = "TOTP-"
TOTP_DIGITS: Final = 6
TOTP_PERIOD: Final = 30
OTPAUTH_ISSUER: Final = "SecOps Orchestrator"


@dataclass(frozen=True)
class Enrolment:
    """A TOTP token just enrolled: ``seed_b32`` is the secret (show it once, never log it)."""

    uid: str
    serial: str
    seed_b32: str
    replaced: tuple[str, ...]

    @property
    def otpauth_url(self) -> str:
        """The ``otpauth://`` URL an authenticator app imports (it holds the seed: a secret)."""
        label = quote(f"{OTPAUTH_ISSUER}:{self.uid}", safe=":@")
        issuer = quote(OTPAUTH_ISSUER)
        return (
            f"otpauth://totp/{label}?secret={self.seed_b32}&issuer={issuer}"
            f"&algorithm=SHA1&digits={TOTP_DIGITS}&period={TOTP_PERIOD}"
        )


@dataclass(frozen=True)
class TokenStatus:
    """One token of a user as the admin API lists it (no seed in it)."""

    serial: str
    tokentype: str
    active: bool
    failcount: int
    maxfail: int
    locked: bool
    revoked: bool
    rollout_state: str

    @property
    def fail_locked(self) -> bool:
        """Every code is refused until reset (privacyIDEA's ``locked`` stays false for this)."""
        return self.failcount >= self.maxfail > 0


def validate_username(uid: str, *, operation: str) -> str:
    if not isinstance(uid, str) or not USERNAME_PATTERN.fullmatch(uid):
        raise MfaAdminError(f"user {uid!r} must match {USERNAME_PATTERN.pattern}", operation=operation)
    return uid


class PrivacyIdeaAdmin:
    """privacyIDEA's admin API as a local administrator (``pi-manage admin``).

    :param base_url: e.g. ``http://127.0.0.1:8120``.
    :param username: the admin's name.
    :param password: the admin's password (only for :meth:`login`; never logged).
    :param realm: the users' realm (default: the server's default realm).
    :param token: an admin JWT from an earlier :meth:`login` (saves about 0.5 s of password hashing);
        on 401 the client logs in again if it has the password.
    """

    def __init__(
        self,
        base_url: str,
        *,
        username: str,
        password: str | None = None,
        realm: str | None = None,
        token: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.username = username
        self._password = password
        self.realm = realm
        self._token = token
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"PrivacyIdeaAdmin({self.base_url!r}, username={self.username!r}, realm={self.realm!r})"

    @cached_property
    def _session(self) -> requests.Session:
        import requests

        session = requests.Session()
        session.headers.update({"User-Agent": USER_AGENT, "Accept": "application/json"})
        return session

    # --- plumbing --------------------------------------------------------------------------------
    def _send(self, method: str, path: str, *, operation: str, **kwargs: Any) -> requests.Response:
        import requests

        try:
            return self._session.request(
                method,
                f"{self.base_url}/{path.lstrip('/')}",
                timeout=self.timeout,
                allow_redirects=False,
                **kwargs,
            )
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise MfaAdminError(
                f"{method} /{path.lstrip('/')}: {type(exc).__name__} talking to {self.base_url}",
                operation=operation,
            ) from None

    def login(self) -> str:
        """``POST /auth``: a fresh admin JWT (also kept for the next calls)."""
        if not self._password:
            raise MfaAdminError("no admin password to log in with", operation="auth")
        response = self._send(
            "POST", "auth", operation="auth", json={"username": self.username, "password": self._password}
        )
        body = _json(response)
        value = body.get("result", {}).get("value") if isinstance(body.get("result"), dict) else None
        token = value.get("token") if isinstance(value, dict) else None
        if response.status_code != 200 or not isinstance(token, str):
            _, server_message = _error_of(body)
            raise MfaAdminError(
                f"POST /auth as {self.username} -> HTTP {response.status_code}: "
                f"{server_message or 'no token in the answer'}",
                operation="auth",
                status=response.status_code,
            )
        self._token = token
        return token

    @property
    def token(self) -> str:
        """The admin JWT (logs in on first use). A secret: never log it."""
        return self._token or self.login()

    def call(self, method: str, path: str, *, operation: str, **kwargs: Any) -> Any:
        """One admin call; returns ``result.value``. A 401 with a password at hand logs in once more."""
        for attempt in (1, 2):
            response = self._send(
                method, path, operation=operation, headers={"PI-Authorization": self.token}, **kwargs
            )
            if response.status_code == 401 and attempt == 1 and self._password:
                self._token = None
                continue
            break
        body = _json(response)
        found = body.get("result")
        result: dict[str, Any] = found if isinstance(found, dict) else {}
        if response.status_code != 200 or not result.get("status"):
            _, server_message = _error_of(body)
            raise MfaAdminError(
                f"{method} /{path.lstrip('/')} -> HTTP {response.status_code}: "
                f"{server_message or response.reason or 'no message'}",
                operation=operation,
                status=response.status_code,
            )
        return result.get("value")

    def _user(self, uid: str) -> dict[str, str]:
        return {"user": uid, **({"realm": self.realm} if self.realm else {})}

    # --- tokens -----------------------------------------------------------------------------------
    def tokens(self, uid: str) -> list[TokenStatus]:
        """The user's tokens (``GET /token/?user=``)."""
        validate_username(uid, operation="token_list")
        value = self.call("GET", "token/", operation="token_list", params=self._user(uid))
        listed = value.get("tokens", []) if isinstance(value, dict) else []
        return [
            TokenStatus(
                serial=str(item.get("serial", "")),
                tokentype=str(item.get("tokentype", "")),
                active=bool(item.get("active")),
                failcount=int(item.get("failcount") or 0),
                maxfail=int(item.get("maxfail") or 0),
                locked=bool(item.get("locked")),
                revoked=bool(item.get("revoked")),
                rollout_state=str(item.get("rollout_state", "")),
            )
            for item in listed
        ]

    def enrol_totp(self, uid: str, seed_b32: str | None = None, *, known_new: bool = False) -> Enrolment:
        """Enrol (or re-enrol) ``uid``'s TOTP token, serial ``TOTP-<uid>``, with ``seed_b32`` (160
        random bits when not given); the user's earlier TOTP tokens are deleted first (a re-enrolment
        replaces a lost phone, and a fresh token starts with no used time steps).

        :param known_new: the caller has just seen (:meth:`token_owners`) that neither the user nor
            the serial has a token: the two look-ups are skipped.
        """
        import base64
        import secrets

        operation = "token_init"
        validate_username(uid, operation=operation)
        seed = seed_b32 or base64.b32encode(secrets.token_bytes(20)).decode("ascii")
        try:
            raw = base64.b32decode(seed, casefold=True)
        except ValueError:
            raise MfaAdminError("the seed is not base32", operation=operation) from None
        serial = f"{TOTP_SERIAL_PREFIX}{uid}"
        replaced = [] if known_new else [t.serial for t in self.tokens(uid) if t.tokentype == "totp"]
        # The serial may also be held by an earlier directory entry of the same uid (deleted and
        # made again: a new entryUUID, so privacyIDEA sees another user): that token goes too.
        if not known_new and serial not in replaced and self._serial_exists(serial):
            replaced.append(serial)
        for old in replaced:
            self.call("DELETE", f"token/{quote(old, safe='')}", operation="token_delete")
        self._init_totp(uid, serial, raw, operation)
        return Enrolment(uid=uid, serial=serial, seed_b32=seed.upper(), replaced=tuple(replaced))

    def add_backup_totp(self, uid: str, number: int) -> Enrolment:
        """Give ``uid`` backup TOTP token ``number`` (serial ``TOTP-<uid>-backup<number>``, a fresh
        seed) beside their token: a second authenticator (a spare phone), any of whose codes is
        accepted too. An earlier backup of that number is replaced; the other tokens stay."""
        import base64
        import secrets

        operation = "token_init"
        validate_username(uid, operation=operation)
        if not 1 <= number <= 9:
            raise MfaAdminError(f"backup token number {number} is not 1-9", operation=operation)
        raw = secrets.token_bytes(20)
        serial = f"{TOTP_SERIAL_PREFIX}{uid}-backup{number}"
        replaced = [serial] if self._serial_exists(serial) else []
        for old in replaced:
            self.call("DELETE", f"token/{quote(old, safe='')}", operation="token_delete")
        self._init_totp(uid, serial, raw, operation)
        seed = base64.b32encode(raw).decode("ascii")
        return Enrolment(uid=uid, serial=serial, seed_b32=seed, replaced=tuple(replaced))

    def _init_totp(self, uid: str, serial: str, raw_seed: bytes, operation: str) -> None:
        self.call(
            "POST",
            "token/init",
            operation=operation,
            json={
                "type": "totp",
                "genkey": 0,
                "otpkey": raw_seed.hex(),
                "otplen": TOTP_DIGITS,
                "hashlib": "sha1",
                "timeStep": TOTP_PERIOD,
                "serial": serial,
                "description": "approval answers (issue 20)",
                **self._user(uid),
            },
        )

    def token_owners(self, *, page_size: int = 10_000) -> dict[str, str]:
        """Every token on the server: serial -> owner's user name (``""`` when unassigned)."""
        value = self.call("GET", "token/", operation="token_list", params={"pagesize": page_size})
        listed = value.get("tokens", []) if isinstance(value, dict) else []
        if isinstance(value, dict) and int(value.get("count") or 0) > len(listed):
            raise MfaAdminError(
                f"more than {page_size} tokens: list them page by page", operation="token_list"
            )
        return {str(item.get("serial")): str(item.get("username") or "") for item in listed}

    def _serial_exists(self, serial: str) -> bool:
        value = self.call("GET", "token/", operation="token_list", params={"serial": serial})
        return bool(value.get("tokens")) if isinstance(value, dict) else False

    def reset_failcounter(self, uid: str) -> int:
        """``POST /token/reset`` for every token of ``uid``; returns how many were reset."""
        validate_username(uid, operation="token_reset")
        value = self.call("POST", "token/reset", operation="token_reset", json=self._user(uid))
        return int(value or 0)

    # --- server configuration (the local stack; an operator's runbook elsewhere) ----------------
    def set_resolver(self, name: str, params: Mapping[str, Any]) -> None:
        self.call("POST", f"resolver/{quote(name, safe='')}", operation="resolver_set", json=dict(params))

    def set_realm(self, name: str, resolvers: list[str], *, default: bool = False) -> None:
        self.call(
            "POST", f"realm/{quote(name, safe='')}", operation="realm_set", json={"resolvers": resolvers}
        )
        if default:
            self.call("POST", f"defaultrealm/{quote(name, safe='')}", operation="realm_default")

    def set_policy(self, name: str, params: Mapping[str, Any]) -> None:
        self.call("POST", f"policy/{quote(name, safe='')}", operation="policy_set", json=dict(params))

    def set_event(self, name: str, params: Mapping[str, Any]) -> None:
        """Create or update (found by ``name``) an event handler binding (``POST /event``)."""
        listed = self.call("GET", "event/", operation="event_list")
        existing = [
            item.get("id") for item in listed or [] if isinstance(item, dict) and item.get("name") == name
        ]
        body = {"name": name, **params, **({"id": existing[0]} if existing else {})}
        self.call("POST", "event", operation="event_set", json=body)

    def set_config(self, values: Mapping[str, str]) -> None:
        self.call("POST", "system/setConfig", operation="config_set", json=dict(values))
