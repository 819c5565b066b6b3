"""The devstack's moto server, with the one AWS call the HR workflows need that moto lacks.

moto 5.2.5 (the newest release) answers identitystore ``UpdateUser`` with NotImplementedError (HTTP
500). Offboarding marks a disabled Identity Center user with it
(:meth:`include.connectors.identity_center.IdentityCenterHook.disable_user`), so the devstack would
fail where AWS succeeds. :func:`install_update_user` adds a minimal UpdateUser following AWS's
documented contract (``Operations``: a list of ``AttributePath`` / ``AttributeValue``; each replaces
one top-level attribute; empty response on success; ``ValidationException`` for an attribute that
cannot be updated; ``ResourceNotFoundException`` for an unknown user). It refuses to install once
moto implements the call itself, so the stand-in cannot outlive its reason.

Run as ``python -m devstack.standins.moto_server -H 127.0.0.1 -p <port>`` (moto_server's own
arguments). Everything else (auth, shapes, throttling, errors) is moto's.

Not shown: updates of nested attributes (``name.givenName``) or of multi-valued ones by index,
``UserStatus``, the enterprise extension (employee number); whatever moto itself leaves out.
"""

from __future__ import annotations

import sys
from typing import Any


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
    moto_main(argv if argv is not None else sys.argv[1:])


if __name__ == "__main__":
    main()
