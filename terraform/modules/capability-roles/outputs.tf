output "role_arns" {
  description = "Capability name -> ARN of its role orchestrator-<capability>."
  value       = { for name, role in aws_iam_role.capability : name => role.arn }
}

output "role_names" {
  description = "Capability name -> name of its role."
  value       = { for name, role in aws_iam_role.capability : name => role.name }
}

output "permissions_boundary_arn" {
  description = "ARN of the managed policy attached as permissions boundary to every capability role."
  value       = aws_iam_policy.boundary.arn
}

output "policy_documents" {
  description = "Capability name -> its rendered inline policy (JSON), for review and for comparing with include.policies.capabilities.iam_policy_document."
  value       = { for name, document in data.aws_iam_policy_document.capability : name => document.json }
}
