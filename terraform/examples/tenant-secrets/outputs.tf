output "secret_names" {
  description = "Names of the example secrets."
  value       = module.tenant_secrets.secret_names
}
