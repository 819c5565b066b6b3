"""
### Implementation service check

Checks what the implementation domain's workflows depend on: the chosen tenant's implementation credential in
Secrets Manager (read, never printed) and the SMTP relay used for SLA alerts.
Trigger it from the UI after a deployment, or to diagnose a failing implementation workflow.
"""

from include.workflows.service_check import service_check_workflow

service_check = service_check_workflow(domain="implementation", doc_md=__doc__)
