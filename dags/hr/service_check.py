"""
### HR service check

Checks what the hr domain's workflows depend on: the chosen tenant's hr credential in
Secrets Manager (read, never printed) and the SMTP relay used for SLA alerts.
Trigger it from the UI after a deployment, or to diagnose a failing hr workflow.
"""

from include.workflows.service_check import service_check_workflow

service_check = service_check_workflow(domain="hr", doc_md=__doc__)
