variable "tenant" {
  type        = string
  description = "Tenant id (tenants.yaml); fills {tenant} in resources and must be the session's \"tenant\" tag."

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,31}$", var.tenant))
    error_message = "tenant must match ^[a-z][a-z0-9-]{1,31}$ (it ends up inside ARNs)."
  }
}

variable "platform_role_arn" {
  type        = string
  description = "ARN of the orchestrator's role in the platform account: the only principal the capability roles trust."

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:role/.+$", var.platform_role_arn))
    error_message = "platform_role_arn must be an IAM role ARN (arn:aws:iam::<12 digits>:role/<name>)."
  }
}

variable "external_id" {
  type        = string
  description = "If set, AssumeRole must also pass this sts:ExternalId. The session tags tenant and capability are always required."
  default     = null
}

variable "capabilities" {
  type = map(list(object({
    sid       = string
    actions   = list(string)
    resources = list(string)
  })))
  description = "Capability name -> its IAM statements, as in include/policies/capabilities.yaml (render with terraform/render_capabilities.py). Resources may use the placeholders {tenant}, {account_id} and {region}."

  validation {
    condition     = alltrue([for name in keys(var.capabilities) : can(regex("^[a-z][a-z0-9-]{1,50}$", name))])
    error_message = "capabilities: a capability name must match ^[a-z][a-z0-9-]{1,50}$ (the role is orchestrator-<name>, at most 64 characters)."
  }

  validation {
    condition = alltrue(flatten([
      for statements in values(var.capabilities) : [
        for statement in statements : [for action in statement.actions : !strcontains(action, "*")]
      ]
    ]))
    error_message = "capabilities: an action must be exact (service:Action); \"*\" and wildcards such as \"s3:*\" are refused."
  }

  validation {
    condition = alltrue(flatten([
      for statements in values(var.capabilities) : [
        for statement in statements : concat(
          [can(regex("^[A-Za-z0-9]+$", statement.sid))],
          [length(statement.actions) > 0 && length(statement.resources) > 0],
          [for action in statement.actions : can(regex("^[a-z0-9-]+:[A-Za-z0-9]+$", action))],
        )
      ]
    ]))
    error_message = "capabilities: every statement needs an alphanumeric sid, at least one action and one resource, and actions of the form service:Action."
  }
}

variable "iam_resource_paths" {
  type        = list(string)
  description = "The only IAM resources (ARN suffixes after \"iam::<account>:\") any capability role may touch; the boundary denies all IAM actions elsewhere."
  default     = ["role/tenant/*", "user/staff/*", "group/staff/*"]
}

variable "boundary_policy_name" {
  type        = string
  description = "Name of the managed policy used as the permissions boundary of every capability role."
  default     = "orchestrator-capability-boundary"
}

variable "tags" {
  type        = map(string)
  description = "Tags merged into every resource of the module."
  default     = {}
}
