"""Plan summaries from Terraform's JSON plan format (``terraform show -json``)."""

from __future__ import annotations

from include.connectors.terraform import summarize_plan


def change(address: str, *actions: str) -> dict:
    rtype, _, name = address.partition(".")
    return {"address": address, "type": rtype, "name": name, "change": {"actions": list(actions)}}


def test_every_action_is_counted_per_resource_type() -> None:
    plan = {
        "resource_changes": [
            change("aws_s3_bucket.logs", "create"),
            change("aws_s3_bucket.state", "no-op"),
            change("aws_iam_role.ci", "update"),
            change("aws_kms_key.audit", "delete", "create"),
            change("aws_kms_key.old", "delete"),
            change("aws_instance.bastion", "create", "delete"),
            change("data_source.x", "read"),
        ]
    }
    summary = summarize_plan(plan)
    assert (summary.changes, summary.add, summary.change, summary.replace, summary.destroy) == (
        True,
        1,
        1,
        2,
        1,
    )
    assert summary.by_type == {
        "aws_s3_bucket": {"add": 1},
        "aws_iam_role": {"change": 1},
        "aws_kms_key": {"replace": 1, "destroy": 1},
        "aws_instance": {"replace": 1},
    }
    assert summary.destroyed == ["aws_instance.bastion", "aws_kms_key.audit", "aws_kms_key.old"]
    assert summary.destructive
    text = summary.markdown()
    assert text.splitlines()[0] == "**1 to add, 1 to change, 2 to replace, 1 to destroy**"
    assert "| `aws_kms_key` | 0 | 0 | 1 | 1 |" in text
    assert text.endswith("**DESTROYS:** `aws_instance.bastion`, `aws_kms_key.audit`, `aws_kms_key.old`")


def test_no_changes() -> None:
    summary = summarize_plan({"resource_changes": [change("aws_s3_bucket.state", "no-op")]})
    assert not summary.changes
    assert not summary.destructive
    assert summary.markdown() == "No changes."


def test_updates_only_are_not_destructive() -> None:
    assert not summarize_plan({"resource_changes": [change("aws_iam_role.ci", "update")]}).destructive
