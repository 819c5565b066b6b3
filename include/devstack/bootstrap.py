"""After migrations, in one process (Airflow imports once): pools and roles from policy, admin user.

The admin password comes from the environment (``ORCH_ADMIN_PASSWORD``), never from argv where
``ps`` would show it.
"""

from __future__ import annotations

import os

from include.devstack.admin import ensure_admin
from include.policies.loader import load_domain_policy
from include.policies.sync import sync_policy


def main() -> None:
    for line in sync_policy(load_domain_policy()):
        print(line, flush=True)
    created = ensure_admin(os.environ["ORCH_ADMIN_USER"], os.environ["ORCH_ADMIN_PASSWORD"])
    print("admin: created" if created else "admin: exists")


if __name__ == "__main__":
    main()
