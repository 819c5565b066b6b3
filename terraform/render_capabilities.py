"""Render the capability policy as the ``capabilities`` and ``trusted_worker_roles`` of capability-roles.

The policies are loaded (and so validated: exact actions, tenant-scoped resources, wildcard
reasons, declared domains) by the orchestrator's own loaders, and written as a Terraform
variables file::

    .venv/bin/python terraform/render_capabilities.py \
        --output terraform/examples/capability-roles/capabilities.auto.tfvars.json

- ``capabilities``: capability -> its statements. Placeholders ({tenant}, {account_id}, {region})
  stay as they are: the module fills them in for the tenant's account it is applied to.
- ``trusted_worker_roles``: capability -> the worker identities (IAM roles in the platform
  account) that may assume it: the identity of the Celery queue of every domain granted the
  capability (``domains:`` in capabilities.yaml, ``queue:`` in domains.yaml). A worker set
  consumes one queue and carries that queue's identity (docker/helm/values.yaml), so a task can
  assume a capability only from a worker of a domain granted it.

Descriptions and wildcard reasons are review material for the pull request, not IAM, so they are
left out.
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
from include.policies.loader import Policy, load_domain_policy, load_policy_file  # noqa: E402

WORKER_ROLE_PREFIX = "orchestrator-worker-"


def worker_role_name(queue: str) -> str:
    """The IAM role (platform account) of the worker set that consumes Celery queue ``queue``."""
    return f"{WORKER_ROLE_PREFIX}{queue}"


def domain_worker_roles(domains: Policy) -> dict[str, str]:
    """Domain -> the worker identity its tasks run with: the role of the domain's Celery queue.

    Domains that share a queue share its identity (today every domain but ``soc`` runs on
    ``default``); a domain given a queue of its own in domains.yaml gets an identity of its own.
    """
    return {name: worker_role_name(domain.queue) for name, domain in sorted(domains.domains.items())}


def capability_map(policy: CapabilityPolicy) -> dict[str, list[dict[str, Any]]]:
    """Capability name -> its statements ``{sid, actions, resources}``, actions sorted."""
    return {
        name: [
            {"sid": s.sid, "actions": sorted(s.actions), "resources": list(s.resources)}
            for s in capability.statements
        ]
        for name, capability in sorted(policy.capabilities.items())
    }


def trusted_worker_roles(policy: CapabilityPolicy, domains: Policy) -> dict[str, list[str]]:
    """Capability -> the worker identities of the domains granted it, sorted, without duplicates."""
    roles = domain_worker_roles(domains)
    return {
        name: sorted({roles[domain] for domain in capability.domains})
        for name, capability in sorted(policy.capabilities.items())
    }


def render(policy: CapabilityPolicy, domains: Policy | None = None) -> str:
    """The ``*.tfvars.json`` text: ``{"capabilities": {...}, "trusted_worker_roles": {...}}``.

    :param policy: the capability policy.
    :param domains: the domain policy the capabilities' domains refer to (default: the deployed one).
    """
    domains = domains if domains is not None else load_domain_policy()
    document = {
        "capabilities": capability_map(policy),
        "trusted_worker_roles": trusted_worker_roles(policy, domains),
    }
    return json.dumps(document, indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--capabilities-file",
        type=Path,
        help="capability policy to render (default: the deployed include/policies/capabilities.yaml)",
    )
    parser.add_argument(
        "--domains-file",
        type=Path,
        help="domain policy the capabilities refer to (default: the deployed include/policies/domains.yaml)",
    )
    parser.add_argument("--output", type=Path, help="write here instead of to stdout")
    args = parser.parse_args(argv)

    domains = load_policy_file(args.domains_file) if args.domains_file else load_domain_policy()
    if args.capabilities_file:
        policy = load_capabilities_file(args.capabilities_file, domains=list(domains.domains))
    else:
        policy = load_capabilities()
    text = render(policy, domains)
    if args.output:
        args.output.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
