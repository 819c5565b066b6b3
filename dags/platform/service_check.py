"""
### Platform service check

Checks what the platform domain's workflows depend on: the chosen tenant's platform credential in
Secrets Manager (read, never printed) and the SMTP relay used for SLA alerts.
Trigger it from the UI after a deployment, or to diagnose a failing platform workflow.
"""

from include.workflows.service_check import service_check_workflow

service_check = service_check_workflow(domain="platform", doc_md=__doc__)
