variable "tenant" {
  type        = string
  description = "Tenant id (tenants.yaml); every secret is named orchestrator/<tenant>/<key>."

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,31}$", var.tenant))
    error_message = "tenant must match ^[a-z][a-z0-9-]{1,31}$."
  }
}

variable "secrets" {
  type        = map(string)
  description = "Secret containers to create: \"<domain or capability>/<name>\" -> description, e.g. {\"support/ticketing-api\" = \"Ticketing API token\"}. Values are never managed by Terraform."
  default     = {}

  validation {
    condition     = alltrue([for key in keys(var.secrets) : can(regex("^[a-z][a-z0-9-]*/[A-Za-z0-9/_+=.@-]+$", key))])
    error_message = "secrets: keys must be \"<domain or capability>/<name>\" (lower-case prefix, then letters, digits and /_+=.@-)."
  }
}

variable "recovery_window_in_days" {
  type        = number
  description = "Days a deleted secret stays recoverable (7-30)."
  default     = 30

  validation {
    condition     = var.recovery_window_in_days >= 7 && var.recovery_window_in_days <= 30
    error_message = "recovery_window_in_days must be between 7 and 30 (0, immediate deletion, is refused)."
  }
}

variable "key_administrator_arns" {
  type        = list(string)
  description = "Administrators of the tenant's secrets key (see the kms module). Empty: the account root."
  default     = []
}

variable "key_user_arns" {
  type        = list(string)
  description = "Principals that read or write the secrets' values (they need the key through Secrets Manager), e.g. the capability roles and the operators' role."
  default     = []
}

variable "kms_deletion_window_in_days" {
  type        = number
  description = "Deletion window of the tenant's secrets key in days (7-30)."
  default     = 30
}

variable "tags" {
  type        = map(string)
  description = "Tags merged into every resource of the module."
  default     = {}
}
