output "backend_config" {
  description = "S3 backend arguments of the new tenant."
  value       = module.tenant.backend_config
}
