"""A tenant's ticketing in tenants.yaml (issue 22, item 4): the deployed demo tenants, and exact
errors (what policy-check's policy-valid shows) for an unknown system, a Jira tenant without its
project, a project on RT, a malformed project key."""

from __future__ import annotations

import re

import pytest
import yaml

from include.policies.loader import PolicyError
from include.policies.tenants import TENANTS_FILE, Ticketing, load_tenants_file, tenant_ticketing
from tests.support.documents import set_at as _set


def exactly(message: str) -> str:
    return f"^{re.escape(message)}$"


def test_deployed_ticketing_one_jira_tenant_and_rt_by_default() -> None:
    assert tenant_ticketing("globex") == Ticketing("jira", "GLOBEX", "Incident", ("In Progress", "Done"))
    assert tenant_ticketing("globex").mirrored
    assert tenant_ticketing("acme") == Ticketing()
    assert not tenant_ticketing("acme").mirrored
    assert tenant_ticketing("secops").system == "request_tracker"


@pytest.mark.parametrize(
    ("ticketing", "problem"),
    [
        pytest.param(
            {"system": "zendesk", "project": "ACME"},
            "tenants.acme.ticketing.system: unknown ticketing system 'zendesk'; "
            "use one of request_tracker, jira",
            id="unknown-system",
        ),
        pytest.param(
            {"system": "jira"},
            "tenants.acme.ticketing.project: missing; "
            "a jira tenant names its Jira Service Management project key",
            id="jira-without-project",
        ),
        pytest.param(
            {"system": "request_tracker", "project": "ACME"},
            "tenants.acme.ticketing: project only apply to system jira "
            "(request_tracker is the MSSP's own RT)",
            id="project-on-rt",
        ),
        pytest.param(
            {"system": "jira", "project": "acme desk"},
            "tenants.acme.ticketing.project: 'acme desk' is not a Jira project key (2-10 upper-case letters, "
            "digits or _, starting with a letter)",
            id="bad-project-key",
        ),
        pytest.param(
            {"project": "ACME"},
            "tenants.acme.ticketing: 'system' is a required property",
            id="no-system",
        ),
        pytest.param(
            {"system": "jira", "project": "ACME", "token": "ATATT3x..."},
            "tenants.acme.ticketing: Additional properties are not allowed ('token' was unexpected)",
            id="no-credential-in-the-policy",
        ),
    ],
)
def test_invalid_ticketing_names_tenant_key_and_problem(ticketing, problem, write_policy) -> None:
    document = yaml.safe_load(TENANTS_FILE.read_text(encoding="utf-8"))
    _set("tenants/acme/ticketing", ticketing)(document)
    path = write_policy(document, "tenants.yaml")
    with pytest.raises(PolicyError, match=exactly(f"invalid tenant policy:\n  {path}: {problem}")):
        load_tenants_file(path)


def test_a_jira_tenant_with_defaults(write_policy) -> None:
    document = yaml.safe_load(TENANTS_FILE.read_text(encoding="utf-8"))
    _set("tenants/acme/ticketing", {"system": "jira", "project": "ACME"})(document)
    policy = load_tenants_file(write_policy(document, "tenants.yaml"))
    assert policy.tenant("acme").ticketing == Ticketing("jira", "ACME", "Task", ("Done",))
