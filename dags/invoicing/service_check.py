"""
### Invoicing service check

Checks what the invoicing domain's workflows depend on: the chosen tenant's invoicing credential in
Secrets Manager (read, never printed) and the SMTP relay used for SLA alerts.
Trigger it from the UI after a deployment, or to diagnose a failing invoicing workflow.
"""

from include.workflows.service_check import service_check_workflow

service_check = service_check_workflow(domain="invoicing", doc_md=__doc__)
