"""After migrations, in one process (Airflow imports once): pools and roles from policy, the admin
user and the approval verifier's service user (connection ``airflow_api``).

Passwords come from the environment (``ORCH_ADMIN_PASSWORD``, ``ORCH_VERIFIER_PASSWORD``), never
from argv where ``ps`` would show them.
"""

from __future__ import annotations

import os

from devstack.admin import ensure_admin, ensure_user
from include.policies.loader import load_domain_policy
from include.policies.sync import VERIFIER_ROLE, sync_policy


def main() -> None:
    for line in sync_policy(load_domain_policy()):
        print(line, flush=True)
    created = ensure_admin(os.environ["ORCH_ADMIN_USER"], os.environ["ORCH_ADMIN_PASSWORD"])
    print("admin: created" if created else "admin: exists")
    created = ensure_user(
        os.environ["ORCH_VERIFIER_USER"],
        os.environ["ORCH_VERIFIER_PASSWORD"],
        role=VERIFIER_ROLE,
        first_name="Approval",
        last_name="Verifier",
    )
    print("approval verifier: created" if created else "approval verifier: exists")


if __name__ == "__main__":
    main()
