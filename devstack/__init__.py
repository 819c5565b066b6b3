"""The local stack: PostgreSQL, moto server, SMTP sink and Airflow, started and stopped by PID.

Used by ``make run`` (profile ``run``) and by the test session (profile ``test``); both bind to
127.0.0.1 only and keep every file under ``.local/<profile>/`` in the repository.

Local-only: not copied into the production image (``docker/Dockerfile`` copies ``include/``,
``plugins/``, ``config/``, ``dags/`` and ``terraform/``). The stand-ins of the systems that cannot
run here are in ``devstack/standins/``, the HTTP ones on one base (``devstack/standins/base.py``).
"""
