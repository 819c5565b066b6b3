# A small tenant stack for the tests: what the stand-in CLI plans and applies.
variable "tenant" {
  type        = string
  description = "Tenant id"
}

variable "correlation_id" {
  type        = string
  description = "Correlation id of the run, tagged on every resource"
}

variable "retention_days" {
  type        = string
  description = "Log retention"
  default     = "30"
}

variable "with_logs" {
  type        = string
  description = "Unused by the stand-in; kept for a realistic variable set"
  default     = "true"
}

resource "aws_s3_bucket" "state" {
  bucket = "orchestrator-${var.tenant}-tfstate"
  tags = {
    tenant         = "${var.tenant}"
    correlation_id = "${var.correlation_id}"
  }
}

resource "aws_cloudwatch_log_group" "workflows" {
  name              = "/orchestrator/${var.tenant}/workflows"
  retention_in_days = "${var.retention_days}"
  tags = {
    tenant = "${var.tenant}"
  }
}

output "state_bucket" {
  description = "The tenant's state bucket"
  value       = "${aws_s3_bucket.state.bucket}"
}

output "bootstrap_token" {
  description = "A sensitive output: never printed, never in XCom"
  value       = "tok-${var.tenant}-s3cr3t-canary"
  sensitive   = true
}
