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

variable "platform_account_id" {
  type        = string
  description = "The orchestrator's platform account (tenants.yaml platform.aws_account_id), home of the worker roles."
  default     = "123456789012"
}

variable "trusted_worker_roles" {
  type        = map(list(string))
  description = "Capability -> worker roles that may assume it (render the full map with terraform/render_capabilities.py)."
  default = {
    "ticket-create"  = ["orchestrator-worker-default", "orchestrator-worker-soc"]
    "terraform-plan" = ["orchestrator-worker-default"]
  }
}

variable "capabilities" {
  type = map(list(object({
    sid       = string
    actions   = list(string)
    resources = list(string)
  })))
  description = "Capability -> statements (render the full map from capabilities.yaml with terraform/render_capabilities.py)."
  default = {
    "ticket-create" = [
      {
        sid       = "ReadTicketingCredential"
        actions   = ["secretsmanager:DescribeSecret", "secretsmanager:GetSecretValue"]
        resources = ["arn:aws:secretsmanager:{region}:{account_id}:secret:orchestrator/{tenant}/ticket-create/*"]
      },
    ]
    "terraform-plan" = [
      {
        sid       = "ReadTerraformState"
        actions   = ["s3:GetObject"]
        resources = ["arn:aws:s3:::orchestrator-{tenant}-tfstate/*"]
      },
      {
        sid       = "ListTerraformState"
        actions   = ["s3:ListBucket"]
        resources = ["arn:aws:s3:::orchestrator-{tenant}-tfstate"]
      },
      {
        sid       = "DescribeNetwork"
        actions   = ["ec2:DescribeRouteTables", "ec2:DescribeSecurityGroups", "ec2:DescribeSubnets", "ec2:DescribeVpcs"]
        resources = ["*"]
      },
    ]
  }
}
