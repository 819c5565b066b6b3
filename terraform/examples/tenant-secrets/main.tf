provider "aws" {
  region = var.region

  default_tags {
    tags = {
      correlation_id = var.correlation_id
      managed-by     = "orchestrator"
    }
  }
}

# The secret containers of tenant acme; values are put afterwards, outside Terraform:
#   aws secretsmanager put-secret-value --secret-id orchestrator/acme/support/ticketing-api ...
module "tenant_secrets" {
  source = "../../modules/tenant-secrets"

  tenant = "acme"
  secrets = {
    "support/ticketing-api"        = "API token of acme's ticketing tool (support domain)."
    "soc/ticketing-api"            = "API token of acme's ticketing tool (SOC queue)."
    "hr/hris-api"                  = "HRIS API credential for onboarding."
    "ticket-create/ticketing-api"  = "Credential of the ticket-create capability."
    "terraform-apply/provider-key" = "Provider credential of the terraform-apply capability."
  }
  key_user_arns = [
    "arn:aws:iam::111111111111:role/orchestrator-ticket-create",
    "arn:aws:iam::111111111111:role/orchestrator-terraform-apply",
  ]
  tags = { tenant = "acme", correlation_id = var.correlation_id }
}
