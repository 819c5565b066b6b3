"""The devstack's moto server, with the one AWS call the HR workflows need that moto lacks.

moto 5.2.5 (the newest release) answers identitystore ``UpdateUser`` with NotImplementedError (HTTP
500). Offboarding marks a disabled Identity Center user with it
(:meth:`include.connectors.identity_center.IdentityCenterHook.disable_user`), so the devstack would
fail where AWS succeeds. :func:`install_update_user` adds a minimal UpdateUser following AWS's
documented contract (``Operations``: a list of ``AttributePath`` / ``AttributeValue``; each replaces
one top-level attribute; empty response on success; ``ValidationException`` for an attribute that
cannot be updated; ``ResourceNotFoundException`` for an unknown user). It refuses to install once
moto implements the call itself, so the stand-in cannot outlive its reason.

A fault switch for the stack's tests (127.0.0.1 only, never on a real service; moto has none): an
approved HR step must be seen failing when Identity Center refuses it. ``POST /_faults``
``{"service": "identitystore", "mode": "denied", "operations": ["UpdateUser", ...], "times": n}``
(``operations`` optional: every identitystore call; ``times`` default a large number, i.e. until
switched off) answers the matching calls as AWS answers a role without the permission: HTTP 400,
``{"__type": "AccessDeniedException", "Message": "User: ... is not authorized to perform:
identitystore:<Operation> ..."}`` (the JSON protocol's error shape), without carrying them out;
``DELETE /_faults`` switches it off; ``GET /_faults`` shows it; a bad spec is 400.
:func:`install_fault_switch` wraps moto's WSGI dispatcher for it (in this process).

Run as ``python -m devstack.standins.moto_server -H 127.0.0.1 -p <port>`` (moto_server's own
arguments). Everything else (auth, shapes, throttling, errors) is moto's.

Not shown: updates of nested attributes (``name.givenName``) or of multi-valued ones by index,
``UserStatus``, the enterprise extension (employee number); whatever moto itself leaves out.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

FAULT_PATH = "/_faults"
FAULT_SERVICES = {"identitystore": "AWSIdentityStore."}  # service -> its X-Amz-Target prefix
FAULT_MODES = frozenset({"denied"})
UNTIL_OFF = 1_000_000


class FaultSwitch:
    """The switched-on faults, per service: ``{"mode", "operations" (None: all), "times"}``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: dict[str, dict[str, Any]] = {}

    def switch(self, spec: dict[str, Any]) -> None:
        service, mode = spec.get("service"), spec.get("mode")
        operations = spec.get("operations")
        times = int(spec.get("times", UNTIL_OFF))
        if service not in FAULT_SERVICES or mode not in FAULT_MODES or times < 1:
            raise ValueError(
                f"service one of {sorted(FAULT_SERVICES)}, mode one of {sorted(FAULT_MODES)}, times >= 1"
            )
        if operations is not None and (
            not isinstance(operations, list) or not all(isinstance(o, str) and o for o in operations)
        ):
            raise ValueError('operations: a list of operation names, e.g. ["UpdateUser"]')
        with self._lock:
            self._faults[service] = {"mode": mode, "operations": operations, "times": times}

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def state(self) -> dict[str, Any]:
        with self._lock:
            return json.loads(json.dumps(self._faults))

    def take(self, target: str) -> tuple[str, str] | None:
        """(service, operation) when the call named by ``X-Amz-Target`` is to fail now."""
        for service, prefix in FAULT_SERVICES.items():
            if not target.startswith(prefix):
                continue
            operation = target[len(prefix) :]
            with self._lock:
                fault = self._faults.get(service)
                if not fault or fault["times"] < 1:
                    return None
                if fault["operations"] is not None and operation not in fault["operations"]:
                    return None
                fault["times"] -= 1
            return service, operation
        return None


FAULTS = FaultSwitch()
WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def _reply(
    start_response: Callable[..., Any], status: str, body: Any, headers: dict[str, str] | None = None
) -> list[bytes]:
    payload = b"" if body is None else json.dumps(body).encode()
    start_response(
        status,
        [
            ("Content-Type", "application/x-amz-json-1.1"),
            ("Content-Length", str(len(payload))),
            *(headers or {}).items(),
        ],
    )
    return [payload]


def faulting(app: WsgiApp, faults: FaultSwitch = FAULTS) -> WsgiApp:
    """``app`` with the fault switch in front of it (see the module docstring)."""

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == FAULT_PATH:
            method = environ.get("REQUEST_METHOD", "GET")
            if method == "GET":
                return _reply(start_response, "200 OK", faults.state())
            if method == "DELETE":
                faults.clear()
                return _reply(start_response, "204 No Content", None)
            if method != "POST":
                return _reply(start_response, "405 Method Not Allowed", {"message": "GET, POST or DELETE"})
            try:
                length = int(environ.get("CONTENT_LENGTH") or 0)
                faults.switch(json.loads(environ["wsgi.input"].read(length) or b"{}"))
            except (ValueError, TypeError, AttributeError) as exc:
                return _reply(start_response, "400 Bad Request", {"message": f"bad fault: {exc}"})
            return _reply(start_response, "204 No Content", None)
        hit = faults.take(str(environ.get("HTTP_X_AMZ_TARGET", "")))
        if hit is not None:
            service, operation = hit
            message = (
                f"User: arn:aws:sts::000000000000:assumed-role/standin is not authorized to perform: "
                f"{service}:{operation} (fault switched on in the devstack's moto server)"
            )
            return _reply(
                start_response,
                "400 Bad Request",
                {"__type": "AccessDeniedException", "Message": message},
                {"x-amzn-ErrorType": "AccessDeniedException"},
            )
        return app(environ, start_response)

    return wrapped


def install_fault_switch() -> None:
    """Put the fault switch in front of moto's WSGI dispatcher (in this process; once)."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication

    call = DomainDispatcherApplication.__call__
    if getattr(call, "__name__", "") == "switched":
        return

    def switched(self: Any, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        return faulting(lambda e, s: call(self, e, s))(environ, start_response)

    DomainDispatcherApplication.__call__ = switched  # type: ignore[method-assign]


def _update_user(self: Any) -> str:
    from moto.identitystore.exceptions import ValidationException

    store_id, user_id = self._get_param("IdentityStoreId"), self._get_param("UserId")
    backend = self.identitystore_backend
    user = backend.describe_user(store_id, user_id)  # raises moto's ResourceNotFoundException
    fields = {
        name.lower(): name for name in user._fields if name not in ("UserId", "IdentityStoreId", "UserName")
    }
    changes = {}
    for operation in self._get_param("Operations") or []:
        path = str(operation.get("AttributePath", ""))
        if path.lower() not in fields:
            raise ValidationException(message=f"The attribute {path} cannot be updated by this stand-in")
        changes[fields[path.lower()]] = operation.get("AttributeValue")
    store = backend._IdentityStoreBackend__get_identity_store(store_id)  # moto's private store
    store.users[user_id] = user._replace(**changes)
    return "{}"


def install_update_user() -> None:
    """Give moto's identitystore an UpdateUser (in this process); an error once moto has its own."""
    from moto.identitystore.responses import IdentityStoreResponse

    if hasattr(IdentityStoreResponse, "update_user"):
        if getattr(IdentityStoreResponse.update_user, "__name__", "") == _update_user.__name__:
            return
        raise RuntimeError(
            "moto implements identitystore UpdateUser now: drop devstack/standins/moto_server.py"
        )
    IdentityStoreResponse.update_user = _update_user  # type: ignore[attr-defined]


def main(argv: list[str] | None = None) -> None:
    from moto.server import main as moto_main

    install_update_user()
    install_fault_switch()
    moto_main(argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    main()
