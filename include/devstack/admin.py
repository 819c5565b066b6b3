"""Create the local admin user if missing; the password comes from the environment, not argv."""

from __future__ import annotations


def ensure_admin(username: str, password: str) -> bool:
    """True if the user was created, False if it already existed."""
    from airflow.providers.fab.auth_manager.cli_commands.utils import get_application_builder

    with get_application_builder() as appbuilder:
        if appbuilder.sm.find_user(username=username):
            return False
        role = appbuilder.sm.find_role("Admin")
        user = appbuilder.sm.add_user(
            username, "Platform", "Admin", f"{username}@secops.example", role, password
        )
        if not user:
            raise RuntimeError(f"could not create user {username}")
        return True
