variable "bucket_name" {
  type        = string
  description = "Name of the audit trail bucket, e.g. \"orchestrator-acme-audit\" (capabilities.yaml reads orchestrator-<tenant>-audit)."
}

variable "retention_days" {
  type        = number
  description = "Default Object Lock retention of every object version, in days (COMPLIANCE mode: nobody, root included, can shorten it or delete the version before it ends)."
  default     = 365

  validation {
    condition     = var.retention_days >= 1 && var.retention_days <= 36500 && floor(var.retention_days) == var.retention_days
    error_message = "retention_days must be a whole number of days between 1 and 36500."
  }
}

variable "log_bucket_name" {
  type        = string
  description = "Existing bucket that receives the server access logs of the audit bucket."
}

variable "log_prefix" {
  type        = string
  description = "Key prefix of the access logs in the log bucket."
  default     = "s3-access/"
}

variable "archive_after_days" {
  type        = number
  description = "Days after which object versions move to S3 Glacier Instant Retrieval (retention is unaffected)."
  default     = 90
}

variable "writer_arns" {
  type        = list(string)
  description = "Principals that write audit records (they need the bucket's key through S3)."
  default     = []
}

variable "reader_arns" {
  type        = list(string)
  description = "Principals that read audit records, e.g. the compliance-export-readonly capability role."
  default     = []
}

variable "key_administrator_arns" {
  type        = list(string)
  description = "Administrators of the bucket's key (see the kms module). Empty: the account root."
  default     = []
}

variable "kms_deletion_window_in_days" {
  type        = number
  description = "Deletion window of the bucket's key in days (7-30)."
  default     = 30
}

variable "tags" {
  type        = map(string)
  description = "Tags merged into every resource of the module."
  default     = {}
}
