output "state_bucket_name" {
  description = "Name of the tenant's Terraform state bucket."
  value       = aws_s3_bucket.state.id
}

output "state_bucket_arn" {
  description = "ARN of the tenant's Terraform state bucket."
  value       = aws_s3_bucket.state.arn
}

output "state_kms_key_arn" {
  description = "ARN of the key that encrypts the tenant's state."
  value       = module.state_kms.key_arn
}

output "lock_table_name" {
  description = "Name of the DynamoDB lock table, or null with S3 native locking."
  value       = var.use_s3_native_locking ? null : aws_dynamodb_table.lock[0].name
}

output "backend_config" {
  description = "Arguments of the tenant's S3 backend (pass each as -backend-config=<name>=<value>; the key is <stack>.tfstate)."
  value = {
    bucket         = aws_s3_bucket.state.id
    region         = data.aws_region.current.name
    encrypt        = true
    kms_key_id     = module.state_kms.key_arn
    use_lockfile   = var.use_s3_native_locking
    dynamodb_table = var.use_s3_native_locking ? null : aws_dynamodb_table.lock[0].name
  }
}

output "secret_arns" {
  description = "Secret key (\"<domain>/<name>\") -> ARN of the tenant's secret."
  value       = module.secrets.secret_arns
}

output "secrets_kms_key_arn" {
  description = "ARN of the tenant's secrets key."
  value       = module.secrets.kms_key_arn
}
