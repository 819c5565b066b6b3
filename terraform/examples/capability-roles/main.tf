provider "aws" {
  region = var.region

  default_tags {
    tags = {
      correlation_id = var.correlation_id
      managed-by     = "orchestrator"
    }
  }
}

# The capability roles of tenant acme in its own account (111111111111), trusted by the
# orchestrator's platform role. The full map comes from include/policies/capabilities.yaml:
#   .venv/bin/python terraform/render_capabilities.py > terraform/examples/capability-roles/capabilities.auto.tfvars.json
# (Terraform loads *.auto.tfvars.json by itself); without it, the two capabilities below are used.
module "capability_roles" {
  source = "../../modules/capability-roles"

  tenant            = "acme"
  platform_role_arn = "arn:aws:iam::123456789012:role/orchestrator-platform"
  capabilities      = var.capabilities
  tags              = { tenant = "acme", correlation_id = var.correlation_id }
}
