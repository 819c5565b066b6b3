provider "aws" {
  region = var.region

  default_tags {
    tags = {
      correlation_id = var.correlation_id
      managed-by     = "orchestrator"
    }
  }
}

# The capability roles of tenant acme in its own account (111111111111), each trusted only by the
# worker identities (platform account 123456789012, tenants.yaml) of the domains granted it. The
# full maps come from include/policies/capabilities.yaml and domains.yaml:
#   .venv/bin/python terraform/render_capabilities.py > terraform/examples/capability-roles/capabilities.auto.tfvars.json
# (Terraform loads *.auto.tfvars.json by itself); without it, the two capabilities below are used.
module "capability_roles" {
  source = "../../modules/capability-roles"

  tenant               = "acme"
  platform_account_id  = var.platform_account_id
  capabilities         = var.capabilities
  trusted_worker_roles = var.trusted_worker_roles
  tags                 = { tenant = "acme", correlation_id = var.correlation_id }
}
