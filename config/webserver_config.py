"""The FAB auth manager's configuration (``[fab] config_file``): log in with the company directory.

Set by ``AIRFLOW__FAB__CONFIG_FILE`` (devstack/airflow_env.py, docker/, helm values). Nothing
secret here: the directory's address and the read-only account's password are the Airflow
connection ``ldap_login`` (the secrets backend), read by include/auth/directory.py; the Flask
secret key is ``[api] secret_key``.

AUTH_LDAP makes the UI's login form and ``POST /auth/token`` call the security manager's
``auth_user_ldap``, which include/auth/security.py implements on ldap3 (FAB's own needs
python-ldap, which cannot be installed here). Who gets which role: include/policies/access.yaml.
docs/auth.md explains login, break-glass, leavers and the production alternative (Entra ID).
"""

from __future__ import annotations

from flask_appbuilder.security.manager import AUTH_LDAP

from include.auth.security import DirectorySecurityManager

AUTH_TYPE = AUTH_LDAP
# FAB checks that this is set under AUTH_LDAP; the server actually used is the ldap_login
# connection's (include/auth/directory.py), so this is only a pointer for a reader.
AUTH_LDAP_SERVER = "airflow-connection://ldap_login"
# No FAB-side search/bind settings: include/auth/security.py does the search and the bind.
AUTH_LDAP_SEARCH = ""
# People are created at their first directory login; their roles are set at every login from
# their directory groups (access.yaml), never by hand.
AUTH_USER_REGISTRATION = True
AUTH_ROLES_SYNC_AT_LOGIN = True
AUTH_ROLES_MAPPING: dict[str, list[str]] = {}  # access.yaml is the mapping
SECURITY_MANAGER_CLASS = DirectorySecurityManager
# Brute force on the login form: FAB's limiter (the default, said so here on purpose).
AUTH_RATE_LIMITED = True
AUTH_RATE_LIMIT = "5 per 40 second"
WTF_CSRF_ENABLED = True
