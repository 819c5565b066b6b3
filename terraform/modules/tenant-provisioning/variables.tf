variable "tenant" {
  type        = string
  description = "Id of the new customer tenant (tenants.yaml)."

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,31}$", var.tenant))
    error_message = "tenant must match ^[a-z][a-z0-9-]{1,31}$."
  }
}

variable "correlation_id" {
  type        = string
  description = "Correlation id of the orchestrator run (implementation workflow) that provisions the tenant; tagged as correlation_id on every resource, so each resource leads back to its run, plan and approval."

  validation {
    condition     = can(regex("^[A-Za-z0-9 _.:/=+@-]{1,256}$", var.correlation_id))
    error_message = "correlation_id must be 1-256 characters valid in an AWS tag value (letters, digits, space and _.:/=+@-)."
  }
}

variable "tags" {
  type        = map(string)
  description = "Tags merged into every resource (tenant and correlation_id are added by the module)."
  default     = {}
}

variable "state_bucket_name" {
  type        = string
  description = "Name of the tenant's Terraform state bucket. Null: orchestrator-<tenant>-tfstate, the name the terraform-plan/apply capabilities are scoped to."
  default     = null
}

variable "access_log_bucket_name" {
  type        = string
  description = "Existing bucket that receives the server access logs of the state bucket."
}

variable "use_s3_native_locking" {
  type        = bool
  description = "True: Terraform >= 1.10 locks with a lock file in the state bucket (backend use_lockfile = true), no table is created. False: a DynamoDB lock table is created."
  default     = true
}

variable "noncurrent_state_retention_days" {
  type        = number
  description = "Days a superseded state version is kept before it expires."
  default     = 90
}

variable "state_user_arns" {
  type        = list(string)
  description = "Principals that read and write the state (the tenant's orchestrator-terraform-plan and orchestrator-terraform-apply roles)."
  default     = []
}

variable "secrets" {
  type        = map(string)
  description = "Secret containers of the tenant, \"<domain or capability>/<name>\" -> description (see the tenant-secrets module)."
  default     = {}
}

variable "secret_user_arns" {
  type        = list(string)
  description = "Principals that read or write the tenant's secret values."
  default     = []
}

variable "key_administrator_arns" {
  type        = list(string)
  description = "Administrators of the tenant's keys (see the kms module). Empty: the account root."
  default     = []
}
