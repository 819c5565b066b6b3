# A customer managed KMS key with rotation always on and an explicit key policy: administrators
# manage the key, users encrypt/decrypt (optionally only through given AWS services). No statement
# grants "kms:*": the actions are listed, so nobody gets a key permission by accident.

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

locals {
  account_root   = "arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:root"
  administrators = length(var.key_administrator_arns) > 0 ? var.key_administrator_arns : [local.account_root]

  # Key management without use of the key for data, and without kms:DisableKeyRotation:
  # rotation cannot be switched off through this policy.
  administrator_actions = [
    "kms:CancelKeyDeletion",
    "kms:CreateAlias",
    "kms:DeleteAlias",
    "kms:DescribeKey",
    "kms:EnableKey",
    "kms:EnableKeyRotation",
    "kms:GetKeyPolicy",
    "kms:GetKeyRotationStatus",
    "kms:ListAliases",
    "kms:ListGrants",
    "kms:ListKeyPolicies",
    "kms:ListKeyRotations",
    "kms:ListResourceTags",
    "kms:PutKeyPolicy",
    "kms:RevokeGrant",
    "kms:RotateKeyOnDemand",
    "kms:ScheduleKeyDeletion",
    "kms:TagResource",
    "kms:UntagResource",
    "kms:UpdateAlias",
    "kms:UpdateKeyDescription",
  ]

  user_actions = [
    "kms:Decrypt",
    "kms:DescribeKey",
    "kms:Encrypt",
    "kms:GenerateDataKey",
    "kms:GenerateDataKeyWithoutPlaintext",
    "kms:ReEncryptFrom",
    "kms:ReEncryptTo",
  ]
}

# In a key policy, Resource "*" means "this key": a key policy cannot name any other resource.
data "aws_iam_policy_document" "key" {
  statement {
    sid       = "KeyAdministration"
    effect    = "Allow"
    actions   = local.administrator_actions
    resources = ["*"]

    principals {
      type        = "AWS"
      identifiers = local.administrators
    }
  }

  dynamic "statement" {
    for_each = length(var.key_user_arns) > 0 ? [1] : []

    content {
      sid       = "KeyUse"
      effect    = "Allow"
      actions   = local.user_actions
      resources = ["*"]

      principals {
        type        = "AWS"
        identifiers = var.key_user_arns
      }

      dynamic "condition" {
        for_each = length(var.via_services) > 0 ? [1] : []

        content {
          test     = "StringEquals"
          variable = "kms:ViaService"
          values   = var.via_services
        }
      }
    }
  }
}

resource "aws_kms_key" "this" {
  description             = var.description
  deletion_window_in_days = var.deletion_window_in_days
  enable_key_rotation     = true
  rotation_period_in_days = var.rotation_period_in_days
  policy                  = data.aws_iam_policy_document.key.json
  tags                    = var.tags
}

resource "aws_kms_alias" "this" {
  name          = "alias/${var.alias}"
  target_key_id = aws_kms_key.this.key_id
}
