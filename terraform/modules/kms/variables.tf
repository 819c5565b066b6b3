variable "alias" {
  type        = string
  description = "Alias of the key without the \"alias/\" prefix, e.g. \"orchestrator/acme/secrets\"."

  validation {
    condition     = can(regex("^[a-zA-Z0-9/_-]{1,250}$", var.alias)) && !startswith(var.alias, "aws/")
    error_message = "alias: letters, digits, '/', '_' and '-' only, and not under the reserved \"aws/\" prefix."
  }
}

variable "description" {
  type        = string
  description = "What the key protects; shown in the KMS console and in CloudTrail."
}

variable "deletion_window_in_days" {
  type        = number
  description = "Waiting period (7-30 days) between scheduling the key's deletion and the deletion itself."
  default     = 30

  validation {
    condition     = var.deletion_window_in_days >= 7 && var.deletion_window_in_days <= 30
    error_message = "deletion_window_in_days must be between 7 and 30."
  }
}

variable "rotation_period_in_days" {
  type        = number
  description = "Automatic rotation period of the key material in days (90-2560). Rotation is always on."
  default     = 365

  validation {
    condition     = var.rotation_period_in_days >= 90 && var.rotation_period_in_days <= 2560
    error_message = "rotation_period_in_days must be between 90 and 2560."
  }
}

variable "key_administrator_arns" {
  type        = list(string)
  description = "IAM principals that administer the key (no use of it for data); must include the principal applying Terraform. Empty: the account root, i.e. the account's IAM policies decide."
  default     = []
}

variable "key_user_arns" {
  type        = list(string)
  description = "IAM principals that may encrypt and decrypt with the key."
  default     = []
}

variable "via_services" {
  type        = list(string)
  description = "If not empty, key users may use the key only through these services (kms:ViaService), e.g. [\"secretsmanager.eu-west-1.amazonaws.com\"]."
  default     = []
}

variable "tags" {
  type        = map(string)
  description = "Tags merged into every resource of the module."
  default     = {}
}
