# The Secrets Manager layout of one tenant: orchestrator/<tenant>/<domain or capability>/<name>,
# all encrypted with the tenant's own customer managed key (rotation on). Terraform creates the
# secret containers only; values are put by the operators (or the orchestrator's secret sync)
# and never appear in Terraform code, plans or state. Only the key's users can decrypt, so only
# they can read a value, whatever their IAM policies say.

data "aws_region" "current" {}

locals {
  prefix = "orchestrator/${var.tenant}"
  tags   = merge(var.tags, { tenant = var.tenant })
}

module "kms" {
  source = "../kms"

  alias                   = "orchestrator/${var.tenant}/secrets"
  description             = "Secrets Manager secrets of tenant ${var.tenant} (${local.prefix}/*)."
  deletion_window_in_days = var.kms_deletion_window_in_days
  key_administrator_arns  = var.key_administrator_arns
  key_user_arns           = var.key_user_arns
  via_services            = ["secretsmanager.${data.aws_region.current.name}.amazonaws.com"]
  tags                    = local.tags
}

resource "aws_secretsmanager_secret" "this" {
  #checkov:skip=CKV2_AWS_57:The values are credentials issued by third-party systems (ticketing, ERP, HRIS); they are rotated there, not by a Secrets Manager rotation Lambda.
  for_each = var.secrets

  name                    = "${local.prefix}/${each.key}"
  description             = each.value
  kms_key_id              = module.kms.key_arn
  recovery_window_in_days = var.recovery_window_in_days
  tags                    = merge(local.tags, { domain = split("/", each.key)[0] })
}
