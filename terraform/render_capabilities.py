"""Render ``include/policies/capabilities.yaml`` as the ``capabilities`` input of the capability-roles module.

The policy is loaded (and so validated: exact actions, tenant-scoped resources, wildcard reasons)
by the orchestrator's own loader, and written as a Terraform variables file::

    .venv/bin/python terraform/render_capabilities.py \
        --output terraform/examples/capability-roles/capabilities.auto.tfvars.json

Placeholders ({tenant}, {account_id}, {region}) stay as they are: the module fills them in for
the tenant's account it is applied to. Descriptions, domains and wildcard reasons are review
material for the pull request, not IAM, so they are left out.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # a stand-alone script: make the repo's `include` importable
    sys.path.insert(0, str(REPO_ROOT))

from include.policies.capabilities import (  # noqa: E402
    CapabilityPolicy,
    load_capabilities,
    load_capabilities_file,
)


def capability_map(policy: CapabilityPolicy) -> dict[str, list[dict[str, Any]]]:
    """Capability name -> its statements ``{sid, actions, resources}``, actions sorted."""
    return {
        name: [
            {"sid": s.sid, "actions": sorted(s.actions), "resources": list(s.resources)}
            for s in capability.statements
        ]
        for name, capability in sorted(policy.capabilities.items())
    }


def render(policy: CapabilityPolicy) -> str:
    """The ``*.tfvars.json`` text: ``{"capabilities": {...}}``."""
    return json.dumps({"capabilities": capability_map(policy)}, indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--capabilities-file",
        type=Path,
        help="capability policy to render (default: the deployed include/policies/capabilities.yaml)",
    )
    parser.add_argument("--output", type=Path, help="write here instead of to stdout")
    args = parser.parse_args(argv)

    policy = load_capabilities_file(args.capabilities_file) if args.capabilities_file else load_capabilities()
    text = render(policy)
    if args.output:
        args.output.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
