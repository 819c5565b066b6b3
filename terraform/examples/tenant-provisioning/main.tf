provider "aws" {
  region = var.region

  default_tags {
    tags = {
      correlation_id = var.correlation_id
      managed-by     = "orchestrator"
    }
  }
}

# What the implementation workflow applies for the new tenant "initech" (S3 native locking).
# The roles named below must exist first (capability-roles): KMS refuses a key policy whose
# principals do not exist.
module "tenant" {
  source = "../../modules/tenant-provisioning"

  tenant                 = "initech"
  correlation_id         = var.correlation_id
  access_log_bucket_name = "orchestrator-initech-access-logs"
  state_user_arns = [
    "arn:aws:iam::333333333333:role/orchestrator-terraform-plan",
    "arn:aws:iam::333333333333:role/orchestrator-terraform-apply",
  ]
  secrets = {
    "support/ticketing-api"        = "API token of initech's ticketing tool."
    "terraform-plan/provider-key"  = "Provider credential of the terraform-plan capability."
    "terraform-apply/provider-key" = "Provider credential of the terraform-apply capability."
  }
  secret_user_arns = [
    "arn:aws:iam::333333333333:role/orchestrator-terraform-plan",
    "arn:aws:iam::333333333333:role/orchestrator-terraform-apply",
  ]
  tags = { environment = "production" }
}
