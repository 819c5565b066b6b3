# What the implementation workflow applies for a new customer tenant: the tenant's Terraform
# state bucket (versioned, SSE-KMS with its own key, TLS only), optionally a DynamoDB lock table
# (S3 native locking is the default), and the tenant's Secrets Manager layout. Every resource is
# tagged with the tenant and the correlation id of the run that applied it.

data "aws_region" "current" {}

data "aws_partition" "current" {}

locals {
  tags              = merge(var.tags, { tenant = var.tenant, correlation_id = var.correlation_id })
  state_bucket_name = coalesce(var.state_bucket_name, "orchestrator-${var.tenant}-tfstate")
  state_bucket_arn  = "arn:${data.aws_partition.current.partition}:s3:::${local.state_bucket_name}"
  lock_table_name   = "orchestrator-${var.tenant}-tflock"
}

module "state_kms" {
  source = "../kms"

  alias                  = "orchestrator/${var.tenant}/tfstate"
  description            = "Terraform state of tenant ${var.tenant}."
  key_administrator_arns = var.key_administrator_arns
  key_user_arns          = var.state_user_arns
  via_services = [
    "s3.${data.aws_region.current.name}.amazonaws.com",
    "dynamodb.${data.aws_region.current.name}.amazonaws.com",
  ]
  tags = local.tags
}

module "secrets" {
  source = "../tenant-secrets"

  tenant                 = var.tenant
  secrets                = var.secrets
  key_administrator_arns = var.key_administrator_arns
  key_user_arns          = var.secret_user_arns
  tags                   = local.tags
}

# ---------------------------------------------------------------------------------------------
# State bucket
# ---------------------------------------------------------------------------------------------
resource "aws_s3_bucket" "state" {
  #checkov:skip=CKV_AWS_144:State is recoverable from its own versions (kept noncurrent_state_retention_days) and can be re-imported; a cross-region replica per tenant is not worth its cost.
  #checkov:skip=CKV2_AWS_62:Nothing consumes state bucket events; changes are already traced by the orchestrator's run (plan hash, approval) and CloudTrail.
  bucket = local.state_bucket_name
  tags   = local.tags
}

resource "aws_s3_bucket_ownership_controls" "state" {
  bucket = aws_s3_bucket.state.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "state" {
  bucket = aws_s3_bucket.state.id

  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "state" {
  bucket = aws_s3_bucket.state.id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "state" {
  bucket = aws_s3_bucket.state.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = module.state_kms.key_arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_logging" "state" {
  bucket = aws_s3_bucket.state.id

  target_bucket = var.access_log_bucket_name
  target_prefix = "s3-access/${local.state_bucket_name}/"
}

resource "aws_s3_bucket_lifecycle_configuration" "state" {
  bucket = aws_s3_bucket.state.id

  rule {
    id     = "expire-superseded-state"
    status = "Enabled"

    filter {}

    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_state_retention_days
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }

  depends_on = [aws_s3_bucket_versioning.state]
}

data "aws_iam_policy_document" "state" {
  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [local.state_bucket_arn, "${local.state_bucket_arn}/*"]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "state" {
  bucket = aws_s3_bucket.state.id
  policy = data.aws_iam_policy_document.state.json

  depends_on = [aws_s3_bucket_public_access_block.state]
}

# ---------------------------------------------------------------------------------------------
# Lock table (only without S3 native locking)
# ---------------------------------------------------------------------------------------------
resource "aws_dynamodb_table" "lock" {
  count = var.use_s3_native_locking ? 0 : 1

  name                        = local.lock_table_name
  billing_mode                = "PAY_PER_REQUEST"
  hash_key                    = "LockID"
  deletion_protection_enabled = true

  attribute {
    name = "LockID"
    type = "S"
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled     = true
    kms_key_arn = module.state_kms.key_arn
  }

  tags = local.tags
}
