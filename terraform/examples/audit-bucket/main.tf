provider "aws" {
  region = var.region

  default_tags {
    tags = {
      correlation_id = var.correlation_id
      managed-by     = "orchestrator"
    }
  }
}

# The audit trail of tenant acme: seven years of COMPLIANCE retention.
module "audit_bucket" {
  source = "../../modules/audit-bucket"

  bucket_name     = "orchestrator-acme-audit"
  retention_days  = 2557
  log_bucket_name = "orchestrator-acme-access-logs"
  # The sealing step's worker identity (the platform domain's queue, platform account 123456789012).
  writer_arns = ["arn:aws:iam::123456789012:role/orchestrator-worker-default"]
  reader_arns = ["arn:aws:iam::111111111111:role/orchestrator-compliance-export-readonly"]
  tags        = { tenant = "acme", correlation_id = var.correlation_id }
}
