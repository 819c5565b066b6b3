variable "tenant" {
  type        = string
  description = "Tenant id (tenants.yaml); fills {tenant} in resources and must be the session's \"tenant\" tag."

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,31}$", var.tenant))
    error_message = "tenant must match ^[a-z][a-z0-9-]{1,31}$ (it ends up inside ARNs)."
  }
}

variable "platform_account_id" {
  type        = string
  description = "The orchestrator's own AWS account (tenants.yaml platform.aws_account_id), where the worker roles live; never a tenant's account."

  validation {
    condition     = can(regex("^[0-9]{12}$", var.platform_account_id))
    error_message = "platform_account_id must be a 12-digit AWS account id."
  }
}

variable "trusted_worker_roles" {
  type        = map(list(string))
  description = "Capability name -> names of the worker roles in the platform account that may assume its role: the identities of the Celery queues of the domains granted the capability (render with terraform/render_capabilities.py). No other principal is trusted."

  validation {
    condition = alltrue(flatten([
      for roles in values(var.trusted_worker_roles) : [for role in roles : can(regex("^orchestrator-worker-[a-z][a-z0-9-]{0,40}$", role))]
    ]))
    error_message = "trusted_worker_roles: a worker role name must match ^orchestrator-worker-[a-z][a-z0-9-]{0,40}$ (one role per Celery queue)."
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
