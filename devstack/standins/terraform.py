"""A stand-in ``terraform`` executable for tests: no Terraform binary reaches these machines.

It follows Terraform's documented CLI contract for the commands the orchestrator uses, on a tiny
model of configuration and state, so the real invoking code (include/connectors/terraform.py)
runs unchanged against it:

- ``version -json``;
- ``init -input=false -no-color -backend-config=path=<state file>`` (the local backend; one state
  file per tenant);
- ``plan -input=false -no-color -detailed-exitcode -lock-timeout=.. -out=<file> [-var k=v]...``:
  exit 0 no changes, 2 changes, 1 error; the plan file is a zip (like Terraform's) holding the
  plan and the state lineage/serial it was made against;
- ``show -json <plan>``: the JSON plan representation (format_version 1.2: resource_changes with
  actions no-op/create/update/delete, output_changes with after_sensitive);
- ``apply -input=false -no-color -json <plan>``: machine-readable UI lines (version, apply_start,
  apply_complete, change_summary, outputs); "Saved plan is stale" (exit 1) if the state moved;
- ``output -json``: outputs with their ``sensitive`` flag;
- ``state pull``: the state JSON (serial, lineage).

Configuration is read from ``*.tf`` with python-hcl2: ``variable`` defaults, ``resource`` blocks
with literal or ``${var.x}`` attributes, ``output`` blocks referencing resource attributes. Each
command that touches the provider asks STS who it is (``GetCallerIdentity`` with the credentials
in its environment, as the AWS provider does) and appends the caller ARN to ``$TF_STANDIN_AUDIT``
if set: tests use it to prove which role planned and which applied. A CLI, not a server: no HTTP
stand-in base.

Not shown: providers (resources live in the state file only, nothing is created in AWS), refresh
and drift (the state is the only truth), ``data`` sources, modules, remote backends, state locking
(``-lock-timeout`` is accepted and ignored), ``-target``, ``import``, ``destroy`` as a command
(``plan -destroy`` is), diagnostics beyond a one-line error.
"""

from __future__ import annotations

import io
import json
import os
import re
import sys
import uuid
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

VERSION = "1.10.5"
_REF = re.compile(r"\$\{([^}]+)\}")


def _unquote(value: Any) -> Any:
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    if isinstance(value, dict):
        return {_unquote(k): _unquote(v) for k, v in value.items() if k != "__is_block__"}
    if isinstance(value, list):
        return [_unquote(v) for v in value]
    return value


def _load_config(workdir: Path) -> dict[str, Any]:
    import hcl2

    config: dict[str, Any] = {"variable": {}, "resource": {}, "output": {}}
    for path in sorted(workdir.glob("*.tf")):
        document = hcl2.loads(path.read_text())
        for block in document.get("variable", []):
            for name, body in block.items():
                config["variable"][_unquote(name)] = _unquote(body)
        for block in document.get("resource", []):
            for rtype, named in block.items():
                for rname, body in named.items():
                    config["resource"][f"{_unquote(rtype)}.{_unquote(rname)}"] = _unquote(body)
        for block in document.get("output", []):
            for name, body in block.items():
                config["output"][_unquote(name)] = _unquote(body)
    return config


def _render(value: Any, variables: dict[str, Any], resources: dict[str, Any] | None = None) -> Any:
    if isinstance(value, dict):
        return {k: _render(v, variables, resources) for k, v in value.items()}
    if isinstance(value, list):
        return [_render(v, variables, resources) for v in value]
    if not isinstance(value, str):
        return value

    def resolve(expression: str) -> Any:
        if expression.startswith("var."):
            return variables[expression[4:]]
        address, _, attribute = expression.rpartition(".")
        return (resources or {}).get(address, {}).get(attribute, f"(known after apply: {expression})")

    whole = _REF.fullmatch(value)
    if whole:
        return resolve(whole.group(1))
    return _REF.sub(lambda m: str(resolve(m.group(1))), value)


def _variables(config: dict[str, Any], args: list[str]) -> dict[str, Any]:
    values = {name: body.get("default") for name, body in config["variable"].items()}
    for name in values:
        if f"TF_VAR_{name}" in os.environ:
            values[name] = os.environ[f"TF_VAR_{name}"]
    for index, arg in enumerate(args):
        if arg == "-var":
            key, _, value = args[index + 1].partition("=")
            values[key] = value
    missing = [name for name, value in values.items() if value is None]
    if missing:
        _fail(f'No value for required variable "{missing[0]}"')
    return values


def _fail(message: str, code: int = 1) -> None:
    sys.stderr.write(f"\nError: {message}\n\n")
    sys.exit(code)


def _option(args: list[str], name: str) -> str | None:
    for arg in args:
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1]
    return None


def _state_path(workdir: Path) -> Path:
    settings = workdir / ".terraform" / "backend.json"
    if not settings.exists():
        _fail('Backend initialization required, please run "terraform init"')
    return Path(json.loads(settings.read_text())["path"])


def _read_state(path: Path) -> dict[str, Any]:
    if path.exists():
        return json.loads(path.read_text())
    # No state yet: no lineage until the first write (as Terraform does).
    return {
        "version": 4,
        "terraform_version": VERSION,
        "serial": 0,
        "lineage": None,
        "outputs": {},
        "resources": {},
    }


def _caller(command: str) -> None:
    audit = os.environ.get("TF_STANDIN_AUDIT")
    if not audit:
        return
    import boto3

    if not os.environ.get("AWS_ACCESS_KEY_ID"):
        _fail("No valid credential sources found for the AWS provider")
    arn = boto3.client("sts").get_caller_identity()["Arn"]
    with open(audit, "a", encoding="utf-8") as handle:
        handle.write(json.dumps({"command": command, "caller": arn}) + "\n")


def _changes(
    config: dict[str, Any], variables: dict[str, Any], state: dict[str, Any]
) -> list[dict[str, Any]]:
    desired = {address: _render(body, variables) for address, body in config["resource"].items()}
    current = state["resources"]
    changes = []
    for address in sorted(set(desired) | set(current)):
        before, after = current.get(address), desired.get(address)
        if before is None:
            actions = ["create"]
        elif after is None:
            actions = ["delete"]
        elif before != after:
            actions = ["update"]
        else:
            actions = ["no-op"]
        rtype, _, name = address.partition(".")
        changes.append(
            {
                "address": address,
                "mode": "managed",
                "type": rtype,
                "name": name,
                "provider_name": "registry.terraform.io/hashicorp/aws",
                "change": {"actions": actions, "before": before, "after": after, "after_unknown": {}},
            }
        )
    return changes


def _outputs(config: dict[str, Any], variables: dict[str, Any], resources: dict[str, Any]) -> dict[str, Any]:
    return {
        name: {
            "value": _render(body.get("value"), variables, resources),
            "sensitive": bool(body.get("sensitive")),
        }
        for name, body in config["output"].items()
    }


def cmd_init(workdir: Path, args: list[str]) -> int:
    path = _option(
        [a.replace("-backend-config=", "") for a in args if a.startswith("-backend-config=")], "path"
    )
    if not path:
        _fail('Backend configuration "path" is required')
    (workdir / ".terraform").mkdir(exist_ok=True)
    (workdir / ".terraform" / "backend.json").write_text(json.dumps({"path": path}))
    print("Terraform has been successfully initialized!")
    return 0


def cmd_plan(workdir: Path, args: list[str]) -> int:
    out = _option(args, "-out")
    config = _load_config(workdir)
    variables = _variables(config, args)
    _caller("plan")
    state = _read_state(_state_path(workdir))
    destroy = "-destroy" in args
    if destroy:
        config = {**config, "resource": {}}
    changes = _changes(config, variables, state)
    after = {c["address"]: c["change"]["after"] for c in changes if c["change"]["after"] is not None}
    outputs = _outputs(config, variables, after)
    plan = {
        "format_version": "1.2",
        "terraform_version": VERSION,
        "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "variables": {k: {"value": v} for k, v in variables.items()},
        "resource_changes": changes,
        "output_changes": {
            name: {
                "actions": ["create"] if name not in state["outputs"] else ["no-op"],
                "before": None,
                "after": None if o["sensitive"] else o["value"],
                "after_sensitive": o["sensitive"],
            }
            for name, o in outputs.items()
        },
        "errored": False,
    }
    if out:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("tfplan.json", json.dumps(plan))
            archive.writestr(
                "tfstate-meta", json.dumps({"lineage": state["lineage"], "serial": state["serial"]})
            )
            archive.writestr("tfconfig-outputs", json.dumps(outputs))
        Path(workdir, out).write_bytes(buffer.getvalue())
    counts = {
        a: sum(1 for c in changes if c["change"]["actions"] == [a]) for a in ("create", "update", "delete")
    }
    changed = any(counts.values())
    if not changed:
        print("No changes. Your infrastructure matches the configuration.")
        return 0
    print(f"Plan: {counts['create']} to add, {counts['update']} to change, {counts['delete']} to destroy.")
    return 2 if "-detailed-exitcode" in args else 0


def _read_plan(path: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    try:
        with zipfile.ZipFile(path) as archive:
            return (
                json.loads(archive.read("tfplan.json")),
                json.loads(archive.read("tfstate-meta")),
                json.loads(archive.read("tfconfig-outputs")),
            )
    except (OSError, zipfile.BadZipFile, KeyError):
        _fail(f'Failed to load "{path.name}" as a plan file: the given file is not a valid plan file')
        raise  # unreachable


def cmd_show(workdir: Path, args: list[str]) -> int:
    if "-json" not in args:
        _fail("only show -json is supported by the stand-in")
    plan_file = [a for a in args if not a.startswith("-")]
    if plan_file:
        plan, _, _ = _read_plan(Path(workdir, plan_file[0]))
        print(json.dumps(plan))
    else:
        print(json.dumps(_read_state(_state_path(workdir))))
    return 0


def _ui(kind: str, message: str, **extra: Any) -> None:
    line = {
        "@level": "info",
        "@message": message,
        "@module": "terraform.ui",
        "@timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "type": kind,
        **extra,
    }
    print(json.dumps(line), flush=True)


def cmd_apply(workdir: Path, args: list[str]) -> int:
    plan_file = [a for a in args if not a.startswith("-")]
    if not plan_file:
        _fail("the stand-in applies saved plans only")
    plan, meta, outputs = _read_plan(Path(workdir, plan_file[0]))
    state_path = _state_path(workdir)
    state = _read_state(state_path)
    if (meta["lineage"], meta["serial"]) != (state["lineage"], state["serial"]):
        _fail(
            "Saved plan is stale\n\nThe given plan file can no longer be applied because the state was "
            "changed by another operation after the plan was created."
        )
    _caller("apply")
    _ui("version", f"Terraform {VERSION}", terraform=VERSION, ui="1.2")
    counts = {"add": 0, "change": 0, "remove": 0}
    for change in plan["resource_changes"]:
        actions = change["change"]["actions"]
        if actions == ["no-op"]:
            continue
        address = change["address"]
        _ui("apply_start", f"{address}: {actions[0].capitalize()}...", hook={"resource": {"addr": address}})
        if actions == ["delete"]:
            state["resources"].pop(address, None)
            counts["remove"] += 1
        else:
            state["resources"][address] = change["change"]["after"]
            counts["add" if actions == ["create"] else "change"] += 1
        _ui(
            "apply_complete",
            f"{address}: {actions[0].capitalize()} complete after 0s",
            hook={"resource": {"addr": address}},
        )
    state["serial"] += 1
    state["lineage"] = state["lineage"] or str(uuid.uuid4())
    state["outputs"] = outputs
    state_path.parent.mkdir(parents=True, exist_ok=True)
    state_path.write_text(json.dumps(state))
    summary = (
        f"Apply complete! Resources: {counts['add']} added, {counts['change']} changed, "
        f"{counts['remove']} destroyed."
    )
    _ui("change_summary", summary, changes={**counts, "operation": "apply"})
    _ui(
        "outputs",
        "Outputs: " + str(len(outputs)),
        outputs={
            k: ({"sensitive": True} if o["sensitive"] else {"sensitive": False, "value": o["value"]})
            for k, o in outputs.items()
        },
    )
    return 0


def cmd_output(workdir: Path, args: list[str]) -> int:
    state = _read_state(_state_path(workdir))
    print(
        json.dumps(
            {
                k: {"sensitive": o["sensitive"], "type": "string", "value": o["value"]}
                for k, o in state["outputs"].items()
            }
        )
    )
    return 0


def cmd_state(workdir: Path, args: list[str]) -> int:
    if args[:1] != ["pull"]:
        _fail("the stand-in supports `state pull` only")
    path = _state_path(workdir)
    if path.exists():  # an empty state prints nothing
        print(path.read_text())
    return 0


def main(argv: list[str]) -> int:
    workdir = Path.cwd()
    args = list(argv)
    chdir = _option(args, "-chdir")
    if chdir:
        workdir = Path(chdir)
        args = [a for a in args if not a.startswith("-chdir=")]
    if not args:
        _fail("no command")
    command, rest = args[0], args[1:]
    if command == "version":
        print(
            json.dumps({"terraform_version": VERSION, "platform": "linux_amd64", "provider_selections": {}})
        )
        return 0
    handlers = {
        "init": cmd_init,
        "plan": cmd_plan,
        "show": cmd_show,
        "apply": cmd_apply,
        "output": cmd_output,
        "state": cmd_state,
    }
    if command not in handlers:
        _fail(f'Terraform has no command named "{command}".')
    return handlers[command](workdir, rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
