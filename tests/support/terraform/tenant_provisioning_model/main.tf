# A model of terraform/modules/tenant-provisioning for the stand-in CLI (tests/support/bin/terraform),
# which cannot evaluate the real module (nested modules, count expressions, functions): the same
# input variables, and the module's main resources with literal or var-only attributes.

variable "tenant" {
  type        = string
  description = "Tenant id"
}

variable "correlation_id" {
  type        = string
  description = "Correlation id of the run, tagged on every resource"
}

variable "state_bucket_name" {
  type        = string
  description = "Name of the tenant's Terraform state bucket"
}

variable "access_log_bucket_name" {
  type        = string
  description = "Bucket receiving the state bucket's access logs"
}

resource "aws_kms_key" "state" {
  description = "Terraform state of ${var.tenant}"
  tags = {
    tenant         = "${var.tenant}"
    correlation_id = "${var.correlation_id}"
  }
}

resource "aws_s3_bucket" "state" {
  bucket = "${var.state_bucket_name}"
  tags = {
    tenant         = "${var.tenant}"
    correlation_id = "${var.correlation_id}"
  }
}

resource "aws_s3_bucket_logging" "state" {
  bucket        = "${var.state_bucket_name}"
  target_bucket = "${var.access_log_bucket_name}"
}

resource "aws_secretsmanager_secret" "ticketing" {
  name = "orchestrator/${var.tenant}/ticket-create/api"
  tags = {
    tenant         = "${var.tenant}"
    correlation_id = "${var.correlation_id}"
  }
}

output "state_bucket" {
  description = "The tenant's Terraform state bucket"
  value       = "${aws_s3_bucket.state.bucket}"
}
