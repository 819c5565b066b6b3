"""
### Audit trail: seal, export, verify

Every 15 minutes (and on demand from the UI): appends audit events left in the spool folder (each
line MAC-checked; a bad one is quarantined and reported), signs a checkpoint over the log (Ed25519
or KMS ECDSA, through the `audit-seal` capability: no task's connection lookup reaches that key),
publishes the public key and exports every sealed segment to the audit bucket under S3 Object Lock
(COMPLIANCE mode), then verifies with public keys only: the checkpoint chain and the records since
the checkpoint before the newest one at every pass; every record on the first pass of each UTC day
and on a run triggered by hand. Damage fails the run, and
the task log names each damaged record and the kind of damage; the platform alert list gets the
failure mail. See docs/audit.md.
"""

from datetime import timedelta

from airflow.sdk import task

from include.workflows.factory import domain_workflow


@domain_workflow(domain="platform", doc_md=__doc__, schedule=timedelta(minutes=15))
def audit_seal() -> None:
    @task
    def seal_export_verify() -> dict:
        from include.audit.seal import run_seal

        return run_seal()

    seal_export_verify()


audit_seal()
