output "secret_arns" {
  description = "Secret key (\"<domain>/<name>\") -> ARN of the secret."
  value       = { for key, secret in aws_secretsmanager_secret.this : key => secret.arn }
}

output "secret_names" {
  description = "Secret key -> full secret name orchestrator/<tenant>/<key>."
  value       = { for key, secret in aws_secretsmanager_secret.this : key => secret.name }
}

output "name_prefix" {
  description = "Prefix of every secret of the tenant, \"orchestrator/<tenant>/\"."
  value       = "${local.prefix}/"
}

output "kms_key_arn" {
  description = "ARN of the tenant's secrets key."
  value       = module.kms.key_arn
}
