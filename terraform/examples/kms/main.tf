provider "aws" {
  region = var.region

  default_tags {
    tags = {
      correlation_id = var.correlation_id
      managed-by     = "orchestrator"
    }
  }
}

# A key for one tenant's evidence files, usable only through S3 by the ticket-update role.
module "kms" {
  source = "../../modules/kms"

  alias                   = "orchestrator/acme/evidence"
  description             = "Evidence files of tenant acme."
  deletion_window_in_days = 30
  key_user_arns           = ["arn:aws:iam::111111111111:role/orchestrator-ticket-update"]
  via_services            = ["s3.${var.region}.amazonaws.com"]
  tags                    = { tenant = "acme", correlation_id = var.correlation_id }
}
