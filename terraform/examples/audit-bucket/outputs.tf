output "bucket_arn" {
  description = "ARN of the example audit bucket."
  value       = module.audit_bucket.bucket_arn
}
