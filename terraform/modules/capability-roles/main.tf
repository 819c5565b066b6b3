# One IAM role per capability, orchestrator-<capability>, in the tenant's account (the provider's
# account). Each role gets exactly its capability's statements as an inline policy, trusts only
# the worker identities of the domains granted the capability (roles in the platform account,
# var.trusted_worker_roles rendered from capabilities.yaml and domains.yaml), only with the
# session tags the orchestrator sends for this tenant and capability (include/connectors/aws.py),
# and carries a permissions boundary that caps what any capability role can ever do, whatever its
# inline policy says.

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

data "aws_region" "current" {}

locals {
  partition  = data.aws_partition.current.partition
  account_id = data.aws_caller_identity.current.account_id
  region     = data.aws_region.current.name

  # capabilities.yaml placeholders, rendered for this tenant's account.
  rendered = {
    for name, statements in var.capabilities : name => [
      for statement in statements : {
        sid     = statement.sid
        actions = sort(distinct(statement.actions))
        resources = [
          for resource in statement.resources :
          replace(replace(replace(resource, "{tenant}", var.tenant), "{account_id}", local.account_id), "{region}", local.region)
        ]
      }
    ]
  }

  all_statements = flatten(values(local.rendered))
  # Actions AWS cannot scope to an ARN are declared with resources ["*"] (and a wildcard_reason).
  unscopable_actions = sort(distinct(flatten([for s in local.all_statements : s.actions if contains(s.resources, "*")])))
  scoped_actions     = sort(distinct(flatten([for s in local.all_statements : s.actions if !contains(s.resources, "*")])))

  # Capability -> ARNs of the worker roles (platform account) that may assume it.
  trusted_principals = {
    for name in keys(var.capabilities) : name => sort(distinct([
      for role in lookup(var.trusted_worker_roles, name, []) :
      "arn:${local.partition}:iam::${var.platform_account_id}:role/${role}"
    ]))
  }
  # The session tags the orchestrator sends (include/connectors/aws.py assume_role_request).
  session_tag_keys = ["capability", "correlation_id", "tenant"]

  boundary_arn = "arn:${local.partition}:iam::${local.account_id}:policy/${var.boundary_policy_name}"
  tenant_resources = [
    "arn:${local.partition}:*:*:${local.account_id}:*",
    "arn:${local.partition}:s3:::orchestrator-${var.tenant}-*",
    # IAM Identity Center users, groups and memberships have no account in their ARN; every
    # identitystore action also needs the identity store, whose ARN is in this account (above).
    "arn:${local.partition}:identitystore:::user/*",
    "arn:${local.partition}:identitystore:::group/*",
    "arn:${local.partition}:identitystore:::membership/*",
  ]
}

# ---------------------------------------------------------------------------------------------
# Permissions boundary: allows at most the actions some capability declares, only on the
# tenant's own resources, and denies the things no capability may ever do.
# ---------------------------------------------------------------------------------------------
data "aws_iam_policy_document" "boundary" {
  dynamic "statement" {
    for_each = length(local.scoped_actions) > 0 ? [1] : []

    content {
      sid       = "AllowDeclaredActionsOnTenantResources"
      effect    = "Allow"
      actions   = local.scoped_actions
      resources = local.tenant_resources
    }
  }

  dynamic "statement" {
    for_each = length(local.unscopable_actions) > 0 ? [1] : []

    content {
      sid       = "AllowDeclaredUnscopableActions"
      effect    = "Allow"
      actions   = local.unscopable_actions
      resources = ["*"]
    }
  }

  statement {
    sid           = "DenyIamOutsideManagedPaths"
    effect        = "Deny"
    actions       = ["iam:*"]
    not_resources = [for path in var.iam_resource_paths : "arn:${local.partition}:iam::${local.account_id}:${path}"]
  }

  statement {
    sid    = "DenyIamEscalation"
    effect = "Deny"
    actions = [
      "iam:AttachGroupPolicy",
      "iam:AttachRolePolicy",
      "iam:AttachUserPolicy",
      "iam:CreateAccessKey",
      "iam:CreateLoginProfile",
      "iam:CreatePolicyVersion",
      "iam:DeleteRolePermissionsBoundary",
      "iam:DeleteUserPermissionsBoundary",
      "iam:PassRole",
      "iam:PutGroupPolicy",
      "iam:PutRolePermissionsBoundary",
      "iam:PutUserPermissionsBoundary",
      "iam:PutUserPolicy",
      "iam:SetDefaultPolicyVersion",
      "iam:UpdateAssumeRolePolicy",
      "iam:UpdateLoginProfile",
    ]
    resources = ["*"]
  }

  statement {
    sid       = "DenyOrganizationAndAccountChanges"
    effect    = "Deny"
    actions   = ["account:*", "organizations:*"]
    resources = ["*"]
  }

  statement {
    sid    = "DenyAuditTampering"
    effect = "Deny"
    actions = [
      "cloudtrail:DeleteTrail",
      "cloudtrail:PutEventSelectors",
      "cloudtrail:StopLogging",
      "cloudtrail:UpdateTrail",
      "config:DeleteConfigurationRecorder",
      "config:DeleteDeliveryChannel",
      "config:StopConfigurationRecorder",
      "guardduty:DeleteDetector",
      "securityhub:DisableSecurityHub",
    ]
    resources = ["*"]
  }

  statement {
    sid    = "DenyKeyAndEvidenceDestruction"
    effect = "Deny"
    actions = [
      "kms:DeleteImportedKeyMaterial",
      "kms:DisableKey",
      "kms:DisableKeyRotation",
      "kms:PutKeyPolicy",
      "kms:ScheduleKeyDeletion",
      "s3:BypassGovernanceRetention",
      "s3:DeleteBucket",
      "s3:DeleteBucketPolicy",
      "s3:DeleteObjectVersion",
      "s3:PutBucketObjectLockConfiguration",
      "s3:PutBucketPolicy",
      "s3:PutBucketVersioning",
      "secretsmanager:DeleteResourcePolicy",
      "secretsmanager:DeleteSecret",
      "secretsmanager:PutResourcePolicy",
    ]
    resources = ["*"]
  }

  # A role can never lift its own cap: the boundary policy itself is out of reach.
  statement {
    sid       = "DenyBoundaryChanges"
    effect    = "Deny"
    actions   = ["iam:CreatePolicyVersion", "iam:DeletePolicy", "iam:DeletePolicyVersion", "iam:SetDefaultPolicyVersion"]
    resources = [local.boundary_arn]
  }
}

resource "aws_iam_policy" "boundary" {
  name        = var.boundary_policy_name
  path        = "/"
  description = "Permissions boundary of every orchestrator-<capability> role of tenant ${var.tenant}."
  policy      = data.aws_iam_policy_document.boundary.json
  tags        = merge(var.tags, { tenant = var.tenant })
}

# ---------------------------------------------------------------------------------------------
# Roles
# ---------------------------------------------------------------------------------------------
data "aws_iam_policy_document" "trust" {
  for_each = var.capabilities

  statement {
    sid     = "DomainWorkersAssumeWithTags"
    effect  = "Allow"
    actions = ["sts:AssumeRole"]

    principals {
      type        = "AWS"
      identifiers = local.trusted_principals[each.key]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:RequestTag/tenant"
      values   = [var.tenant]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:RequestTag/capability"
      values   = [each.key]
    }

    dynamic "condition" {
      for_each = var.external_id == null ? [] : [var.external_id]

      content {
        test     = "StringEquals"
        variable = "sts:ExternalId"
        values   = [condition.value]
      }
    }
  }

  # sts:TagSession is evaluated on its own: the same principals, the same tag values, and no
  # other tag keys, so a caller cannot add a tag (say domain or tenant twice) the roles never see.
  statement {
    sid     = "DomainWorkersTagSession"
    effect  = "Allow"
    actions = ["sts:TagSession"]

    principals {
      type        = "AWS"
      identifiers = local.trusted_principals[each.key]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:RequestTag/tenant"
      values   = [var.tenant]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:RequestTag/capability"
      values   = [each.key]
    }

    condition {
      test     = "ForAllValues:StringEquals"
      variable = "aws:TagKeys"
      values   = local.session_tag_keys
    }
  }
}

data "aws_iam_policy_document" "capability" {
  for_each = local.rendered

  dynamic "statement" {
    for_each = each.value

    content {
      sid       = statement.value.sid
      effect    = "Allow"
      actions   = statement.value.actions
      resources = statement.value.resources
    }
  }
}

resource "aws_iam_role" "capability" {
  for_each = var.capabilities

  name                 = "orchestrator-${each.key}"
  path                 = "/"
  description          = "Orchestrator capability ${each.key} (include/policies/capabilities.yaml)."
  assume_role_policy   = data.aws_iam_policy_document.trust[each.key].json
  max_session_duration = 3600
  permissions_boundary = aws_iam_policy.boundary.arn
  tags                 = merge(var.tags, { tenant = var.tenant, capability = each.key })

  lifecycle {
    precondition {
      condition     = length(local.trusted_principals[each.key]) > 0
      error_message = "capability ${each.key}: no worker role in trusted_worker_roles may assume it (render the map with terraform/render_capabilities.py)."
    }

    precondition {
      condition     = var.platform_account_id != local.account_id
      error_message = "capability roles belong in the tenant's account, not in the platform account ${var.platform_account_id}."
    }
  }
}

resource "aws_iam_role_policy" "capability" {
  for_each = var.capabilities

  name   = "orchestrator-${each.key}"
  role   = aws_iam_role.capability[each.key].id
  policy = data.aws_iam_policy_document.capability[each.key].json
}
