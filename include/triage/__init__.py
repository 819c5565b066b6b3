"""Support ticket triage.

:mod:`.rules` classifies a ticket with ``include/policies/support_triage.yaml``; :mod:`.tickets` is
the body of the ``support_triage`` DAG (``dags/support/triage.py``).
"""
