output "role_arns" {
  description = "Capability -> role ARN."
  value       = module.capability_roles.role_arns
}

output "permissions_boundary_arn" {
  description = "ARN of the boundary attached to every capability role."
  value       = module.capability_roles.permissions_boundary_arn
}
