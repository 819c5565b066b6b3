"""Create the local admin and the approval verifier's service user if missing.

Passwords come from the environment, not argv.
"""

from __future__ import annotations


def ensure_user(username: str, password: str, *, role: str, first_name: str, last_name: str) -> bool:
    """True if the user was created, False if it already existed."""
    from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder

    with get_application_builder() as appbuilder:
        if appbuilder.sm.find_user(username=username):
            return False
        found = appbuilder.sm.find_role(role)
        if found is None:
            raise RuntimeError(f"role {role} does not exist (policy-sync creates it)")
        user = appbuilder.sm.add_user(
            username, first_name, last_name, f"{username}@secops.example", found, password
        )
        if not user:
            raise RuntimeError(f"could not create user {username}")
        return True


def ensure_admin(username: str, password: str) -> bool:
    """True if the admin was created, False if it already existed."""
    return ensure_user(username, password, role="Admin", first_name="Platform", last_name="Admin")
