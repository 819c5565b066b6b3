output "key_arn" {
  description = "ARN of the key (use it for kms_key_id / kms_master_key_id arguments)."
  value       = aws_kms_key.this.arn
}

output "key_id" {
  description = "Id of the key."
  value       = aws_kms_key.this.key_id
}

output "alias_name" {
  description = "Full alias name of the key, \"alias/<alias>\"."
  value       = aws_kms_alias.this.name
}

output "alias_arn" {
  description = "ARN of the key's alias."
  value       = aws_kms_alias.this.arn
}
