"""The Terraform hook offline: plan summaries from Terraform's JSON plan format (``terraform show
-json``), settings from the connection, the CLI's environment, and each command through the base's
``call`` (a scripted fake CLI stands in for Terraform; the stand-in CLI and moto are in
tests/integration/connectors/test_terraform_cli.py).
"""

from __future__ import annotations

import json
import os
import stat
from datetime import timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from airflow.sdk import Connection

from include.connectors.terraform import (
    REPO_ROOT,
    TerraformError,
    TerraformHook,
    TerraformSettings,
    summarize_plan,
)

SECRET = "s3cr3t-key"
TOKEN = "session-tok"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "ASIA0", "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_SESSION_TOKEN": TOKEN}
# A fake CLI: answers from $FAKE_TF_ANSWERS/<command> (stdout, then the exit code on the last line).
FAKE_CLI = """\
#!/bin/sh
shift  # -chdir=...
echo "$*" >> "$FAKE_TF_LOG"
answer="$FAKE_TF_ANSWERS/$1"
[ -f "$answer" ] || { echo "no command named $1"; exit 1; }
head -n -1 "$answer"
exit "$(tail -n 1 "$answer")"
"""


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


# --- the hook --------------------------------------------------------------------------------------


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    binary = tmp_path / "bin" / "terraform"
    binary.parent.mkdir()
    binary.write_text(FAKE_CLI)
    binary.chmod(binary.stat().st_mode | stat.S_IEXEC)
    paths = {"binary": binary, "answers": tmp_path / "answers", "log": tmp_path / "calls.log"}
    paths["answers"].mkdir()
    (tmp_path / "stack").mkdir()
    (tmp_path / "stack" / "main.tf").write_text("# the configuration\n")
    extras = {
        "binary": str(binary),
        "work_root": str(tmp_path / "work"),
        "state_root": str(tmp_path / "state"),
        "max_plan_age_seconds": 60,
    }
    connection = Connection(conn_id="terraform_default", conn_type="generic", extra=json.dumps(extras))
    monkeypatch.setattr(TerraformHook, "get_connection", classmethod(lambda cls, conn_id: connection))
    return paths


def answer(cli: dict[str, Path], command: str, output: str, code: int = 0) -> None:
    (cli["answers"] / command).write_text(f"{output}\n{code}\n")


def make_hook(tmp_path: Path, cli: dict[str, Path], lines: list[str]) -> TerraformHook:
    hook = TerraformHook(
        tenant="acme", stack="baseline", source=tmp_path / "stack", workspace="run/1:x", output=lines.append
    )
    hook.credentials = {**CREDENTIALS, "FAKE_TF_ANSWERS": str(cli["answers"]), "FAKE_TF_LOG": str(cli["log"])}
    return hook


def test_settings_come_from_the_connection_lazily(tmp_path: Path, cli: dict[str, Path]) -> None:
    hook = TerraformHook(tenant="acme", stack="baseline", source="terraform/modules/x", workspace="r")
    assert "settings" not in hook.__dict__  # nothing read in __init__
    assert hook.settings == TerraformSettings(
        binary=str(cli["binary"]),
        work_root=tmp_path / "work",
        state_root=tmp_path / "state",
        max_plan_age=timedelta(seconds=60),
    )
    assert hook.configuration == REPO_ROOT / "terraform/modules/x"
    assert hook.workdir == tmp_path / "work" / "acme" / "baseline" / "r"
    assert hook.state_file == tmp_path / "state" / "acme" / "baseline.tfstate"


@pytest.mark.parametrize(
    ("extras", "message"),
    [
        pytest.param(
            {}, "^connection terraform_default: extra needs binary, work_root, state_root$", id="none"
        ),
        pytest.param(
            {"binary": "tofu", "work_root": "/w"},
            "^connection terraform_default: extra needs state_root$",
            id="one",
        ),
    ],
)
def test_settings_name_the_missing_extras(extras: dict[str, Any], message: str) -> None:
    with pytest.raises(TerraformError, match=message):
        TerraformSettings.from_extras("terraform_default", extras)


def test_the_connection_may_map_a_configuration_to_another() -> None:
    settings = TerraformSettings("t", Path("/w"), Path("/s"), timedelta(hours=1), {"terraform/a": "models/a"})
    assert settings.source_for(REPO_ROOT / "terraform" / "a", REPO_ROOT) == REPO_ROOT / "models" / "a"
    assert settings.source_for(REPO_ROOT / "terraform" / "b", REPO_ROOT) == REPO_ROOT / "terraform" / "b"


def test_the_cli_environment_is_built_from_nothing_but_the_credentials(
    tmp_path: Path, cli: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWORKERAMBIENT")
    monkeypatch.setenv("WORKER_DB_PASSWORD", "not-for-terraform")
    hook = make_hook(tmp_path, cli, [])
    environment = hook._environment()
    assert environment["AWS_ACCESS_KEY_ID"] == "ASIA0"
    assert "WORKER_DB_PASSWORD" not in environment
    assert {k: environment[k] for k in ("HOME", "TF_IN_AUTOMATION", "TF_INPUT", "TF_VAR_tenant")} == {
        "HOME": str(hook.workdir),
        "TF_IN_AUTOMATION": "1",
        "TF_INPUT": "0",
        "TF_VAR_tenant": "acme",
    }
    assert hook.workspace == "run_1_x"


def test_prepare_copies_the_configuration_masks_the_secrets_and_inits_the_tenant_state(
    tmp_path: Path, cli: dict[str, Path]
) -> None:
    answer(cli, "init", "Terraform has been successfully initialized!")
    lines: list[str] = []
    hook = make_hook(tmp_path, cli, lines)
    credentials = {**hook.credentials}
    with (
        mock.patch("airflow.sdk.log.mask_secret") as mask,
        mock.patch.object(hook, "call", wraps=hook.call) as call,
    ):
        hook.prepare(credentials)
    # (Airflow masks the connection's extras too, when the settings are first read.)
    assert mock.call(SECRET) in mask.call_args_list
    assert mock.call(TOKEN) in mask.call_args_list
    assert (hook.workdir / "main.tf").read_text() == "# the configuration\n"
    assert call.call_args.args[0] == "terraform init"
    assert call.call_args.kwargs == {"retry": True}
    assert cli["log"].read_text() == f"init -input=false -no-color -backend-config=path={hook.state_file}\n"
    assert lines == ["Terraform has been successfully initialized!"]


def test_a_failing_command_names_itself_the_stack_and_terraforms_last_line(
    tmp_path: Path, cli: dict[str, Path]
) -> None:
    hook = make_hook(tmp_path, cli, [])
    hook.workdir.mkdir(parents=True)
    with pytest.raises(
        TerraformError,
        match=r"^terraform frobnicate failed \(exit 1\) for acme/baseline: no command named frobnicate$",
    ):
        hook.run("frobnicate")


def test_destructive_reads_the_plan_file_itself_without_logging_it(
    tmp_path: Path, cli: dict[str, Path]
) -> None:
    show = {"resource_changes": [change("aws_s3_bucket.state", "delete", "create")]}
    answer(cli, "show", json.dumps(show))
    lines: list[str] = []
    hook = make_hook(tmp_path, cli, lines)
    hook.workdir.mkdir(parents=True)
    assert hook.destructive(hook.workdir / "tfplan") is True
    assert cli["log"].read_text() == "show -json tfplan\n"
    assert lines == []


def test_apply_is_one_attempt_and_outputs_drop_sensitive_values(tmp_path: Path, cli: dict[str, Path]) -> None:
    ui = [
        {"type": "apply_complete", "@message": "aws_s3_bucket.state: Creation complete"},
        {"type": "outputs", "@message": "Outputs: 2", "outputs": {"token": {"value": "tok-canary"}}},
        {
            "type": "change_summary",
            "@message": "Apply complete!",
            "changes": {"add": 1, "operation": "apply"},
        },
    ]
    answer(cli, "apply", "\n".join(json.dumps(line) for line in ui))
    outputs = {
        "bucket": {"value": "b", "sensitive": False},
        "token": {"value": "tok-canary", "sensitive": True},
    }
    answer(cli, "output", json.dumps(outputs))
    lines: list[str] = []
    hook = make_hook(tmp_path, cli, lines)
    hook.workdir.mkdir(parents=True)
    with mock.patch.object(hook, "call", wraps=hook.call) as call:
        assert hook.apply(hook.workdir / "tfplan") == {"add": 1, "operation": "apply"}
        assert hook.outputs() == {"bucket": "b", "token": "(sensitive)"}
    assert [(c.args[0], c.kwargs) for c in call.call_args_list] == [
        ("terraform apply", {"retry": False}),
        ("terraform output", {"retry": True}),
    ]
    assert lines == ["aws_s3_bucket.state: Creation complete", "Apply complete!"]
    assert not any("tok-canary" in line for line in lines)
    assert os.environ.get("FAKE_TF_LOG") is None  # the CLI's environment stays the CLI's
