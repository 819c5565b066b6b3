"""FAB's security manager with the company directory as the login (issue 20).

Configured by ``SECURITY_MANAGER_CLASS`` in the FAB config file (``config/webserver_config.py``,
``AUTH_TYPE = AUTH_LDAP``): the FAB auth manager instantiates that class
(``FabAuthManager.security_manager``). With AUTH_LDAP, the UI's login form calls
:meth:`DirectorySecurityManager.auth_user_ldap` only, and ``POST /auth/token`` calls it first and
then :meth:`~DirectorySecurityManager.auth_user_db`.

- A directory person (:mod:`include.auth.directory`, read-only through connection ``ldap_login``)
  logs in with their directory password. Their FAB user is created at the first login (names and
  mail from the directory, no local password) and its roles are set to exactly what their
  directory groups grant (``include/policies/access.yaml``) at every login. A person whose groups
  grant no role is refused (and loses the roles they had).
- Only the local accounts of access.yaml (the break-glass admin, the service accounts) log in
  with a password kept in Airflow's database; for anyone else ``auth_user_db`` says no, so a
  leftover local password (or one an admin typed in) opens nothing. The break-glass admin's every
  login is an ``auth.break_glass`` audit record (how: ui or token); a wrong break-glass password
  is an ``auth.login_refused`` record.
- An attempt on a locked directory account (offboarded: ``pwdAccountLockedTime``) is an
  ``auth.login_refused`` record, whatever the password: that is a leaver or someone with their
  name. Wrong passwords of active accounts are not recorded (volume; FAB counts them in
  ``fail_login_count`` and logs them), nor are unknown names.

Why not FAB's own ``auth_user_ldap``: it needs python-ldap, which cannot be installed here (sdist
only, a C build against libldap); ldap3, pure Python, is the project's LDAP client already.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.providers.fab.auth_manager.security_manager.override import FabAirflowSecurityManagerOverride

from include.auth import directory as directory_module
from include.auth.directory import DirectoryPerson, DirectoryUnavailable, valid_uid
from include.policies.access import AccessPolicy, load_access

log = logging.getLogger(__name__)

DIRECTORY_DOMAIN_FALLBACK = "directory.invalid"  # mail of a person with none in the directory


def _how(rotate_session_id: bool) -> str:
    # FAB rotates the session id for an interactive (UI) login, never for /auth/token.
    return "ui" if rotate_session_id else "token"


def _remote_addr() -> str | None:
    try:
        from flask import has_request_context, request

        return request.remote_addr if has_request_context() else None
    except Exception:  # pragma: no cover - no Flask: nothing to add
        return None


def _audit(kind: str, actor: str, subject: str, details: dict[str, Any]) -> None:
    from include.audit.emit import emit

    remote = _remote_addr()
    emit(
        {
            "kind": kind,
            "actor": actor,
            "subject": subject,
            "details": {**details, **({"remote_addr": remote} if remote else {})},
        }
    )


class DirectorySecurityManager(FabAirflowSecurityManagerOverride):
    """FAB's security manager, logging people in through the directory (module docstring)."""

    # Seams for tests (a directory faked at the interface); production reads the policy file and
    # the ``ldap_login`` connection.
    def _access(self) -> AccessPolicy:
        return load_access()

    def _directory(self) -> Any:
        return directory_module.directory()

    # --- directory users -------------------------------------------------------------------
    def auth_user_ldap(self, username: Any, password: Any, rotate_session_id: bool = True) -> Any:
        if not isinstance(username, str) or not username:
            return None
        access = self._access()
        if access.is_local_account(username):
            # Never the directory for a local account (a directory entry of the same name gets
            # nothing). The UI login form of AUTH_LDAP calls only this method, so a local account
            # takes the local-password path from here; /auth/token (rotate_session_id False)
            # calls auth_user_db itself next, so here it gets None (one attempt, one record).
            if not rotate_session_id:
                return None
            return self.auth_user_db(username, password, rotate_session_id=rotate_session_id)
        uid = valid_uid(username)
        if uid is None:
            return None
        try:
            source = self._directory()
            person = source.lookup(uid)
            if person is None:
                log.info("login refused: %s is not in the directory", uid)
                return None
            if person.locked:
                log.warning("login refused: directory account %s is locked", uid)
                _audit(
                    "auth.login_refused",
                    uid,
                    "login refused",
                    {"rule": "directory-locked", "how": _how(rotate_session_id)},
                )
                return None
            if not source.verify_password(person, password):
                user = self.find_user(username=uid)
                if user is not None:
                    self.update_user_auth_stat(user, False)
                log.info("login refused: wrong directory password for %s", uid)
                return None
        except DirectoryUnavailable as exc:
            log.error("login of %s refused: %s", uid, exc)
            return None
        return self._sync_user(person, access, rotate_session_id=rotate_session_id)

    def _sync_user(self, person: DirectoryPerson, access: AccessPolicy, *, rotate_session_id: bool) -> Any:
        """Create or update the FAB user of ``person``: names, mail, exactly the roles of their groups."""
        wanted = sorted(access.roles_of_groups(person.groups))
        roles = []
        for name in wanted:
            role = self.find_role(name)
            if role is None:
                log.warning(
                    "role %s (granted to %s by access.yaml) does not exist; run policy-sync", name, person.uid
                )
            else:
                roles.append(role)
        user = self.find_user(username=person.uid)
        if user is not None and not user.is_active:
            log.info("login refused: FAB user %s is deactivated", person.uid)
            return None
        mail = person.mail or f"{person.uid}@{DIRECTORY_DOMAIN_FALLBACK}"
        if user is None:
            if not roles:
                log.info("login refused: the directory groups of %s grant no role", person.uid)
                return None
            try:
                user = self.add_user(
                    username=person.uid,
                    first_name=person.given_name or person.uid,
                    last_name=person.surname or person.uid,
                    email=mail,
                    role=roles,
                )
            except Exception as exc:  # FabException: e.g. the mail is another user's
                log.error("login of %s refused: could not create the user: %s", person.uid, exc)
                return None
        else:
            user.first_name = person.given_name or user.first_name
            user.last_name = person.surname or user.last_name
            user.email = mail
            user.roles = roles
        # Directory users never have a local password (auth_user_db refuses them anyway).
        user.password = None
        self.update_user_auth_stat(user, bool(roles))  # commits
        self._reset_user_permissions_cache(user)
        directory_module.standing().forget(person.uid)
        if not roles:
            log.info("login refused: the directory groups of %s grant no role (roles removed)", person.uid)
            return None
        if rotate_session_id:
            self._rotate_session_id()
        return user

    # --- local accounts --------------------------------------------------------------------
    def auth_user_db(self, username: Any, password: Any, rotate_session_id: bool = True) -> Any:
        if not isinstance(username, str) or not username:
            return None
        access = self._access()
        if not access.is_local_account(username):
            log.info("local-password login refused for %s: not a local account (access.yaml)", username)
            return None
        user = super().auth_user_db(username, password, rotate_session_id=rotate_session_id)
        if username.lower() == access.break_glass:
            how = _how(rotate_session_id)
            if user is not None:
                log.warning("break-glass login of %s (%s)", access.break_glass, how)
                _audit("auth.break_glass", access.break_glass, "break-glass login", {"how": how})
            else:
                _audit(
                    "auth.login_refused",
                    access.break_glass,
                    "login refused",
                    {"rule": "break-glass-password", "how": how},
                )
        return user
