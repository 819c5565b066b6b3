output "bucket_name" {
  description = "Name of the audit trail bucket."
  value       = aws_s3_bucket.this.id
}

output "bucket_arn" {
  description = "ARN of the audit trail bucket."
  value       = aws_s3_bucket.this.arn
}

output "kms_key_arn" {
  description = "ARN of the bucket's customer managed key."
  value       = module.kms.key_arn
}

output "retention_days" {
  description = "Default COMPLIANCE retention of every object version, in days."
  value       = aws_s3_bucket_object_lock_configuration.this.rule[0].default_retention[0].days
}
