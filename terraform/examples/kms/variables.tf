variable "region" {
  type        = string
  description = "AWS region of the tenant's account."
  default     = "eu-west-1"
}

variable "correlation_id" {
  type        = string
  description = "Correlation id of the orchestrator run applying this configuration; every resource is tagged with it (provider default_tags)."
  default     = "example-run-0001"
}
