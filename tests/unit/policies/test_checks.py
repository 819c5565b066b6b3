"""policy-check: each rule on a tiny DAG folder with one deliberate mistake, and the real repo clean."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest
import yaml

from include.policies import checks
from include.policies.approvals import APPROVALS_FILE
from include.policies.checks import (
    DEFAULT_DAGS_FOLDER,
    DEFAULT_INCLUDE_FOLDER,
    CheckContext,
    Violation,
    check_approval_before_privileged,
    check_dag_imports,
    check_dag_serializes,
    check_domain_pool,
    check_domain_settings,
    check_known_domain,
    check_no_literal_secrets,
    check_parse_budget,
    check_policy_valid,
    display_path,
    run_checks,
)
from include.policies.loader import DOMAINS_FILE, POLICY_DIR
from include.policies.secret_scan import find_literal_secrets

DECLARED = "hr, implementation, invoicing, platform, soc, support"


def factory_dag(domain: str, name: str, task_args: str = "", dag_args: str = "") -> str:
    """Source of a DAG file built the platform way, through domain_workflow."""
    return f'''
        """Test workflow {name}."""
        from airflow.sdk import task

        from include.workflows import domain_workflow


        @domain_workflow(domain="{domain}", doc_md=__doc__{dag_args})
        def {name}():
            @task({task_args})
            def step():
                return 1

            step()


        {name}()
    '''


def plain_dag(dag_id: str, tags: list[str], task_args: str = 'pool="default_pool"') -> str:
    """Source of a DAG file built by hand, bypassing the platform."""
    return f'''
        """Hand-made workflow {dag_id}."""
        from airflow.providers.standard.operators.empty import EmptyOperator
        from airflow.sdk import DAG

        with DAG("{dag_id}", schedule=None, tags={tags!r}, doc_md=__doc__):
            EmptyOperator(task_id="step", {task_args})
    '''


def context(folder: Path, **kwargs) -> CheckContext:
    return CheckContext(dags_folder=folder, **kwargs)


def where(folder: Path, name: str, dag_id: str, task_id: str | None = None) -> str:
    location = f"{display_path(folder / f'{name}.py')}::{dag_id}"
    return f"{location}::{task_id}" if task_id else location


# --------------------------------------------------------------------------------------------
# policy-valid


def test_policy_valid_reports_every_problem(dag_folder, policy_document, write_policy):
    policy_document["domains"]["support"]["pool_slots"] = -1
    policy_document["domains"]["soc"]["approval"]["timeout"] = "15 minutes"
    policy = write_policy(policy_document)
    shown = display_path(policy)

    violations = run_checks(context(dag_folder(), policy_file=policy), [check_policy_valid])

    assert violations == [
        Violation(
            "policy-valid",
            shown,
            f"{policy}: domains.soc.approval.timeout: '15 minutes' does not match '^[1-9][0-9]*[smhd]$'",
        ),
        Violation(
            "policy-valid", shown, f"{policy}: domains.support.pool_slots: -1 is less than the minimum of 1"
        ),
    ]


def test_policy_valid_checks_the_approval_policy_next_to_it(dag_folder, policy_document, write_policy):
    policy = write_policy(policy_document)
    approvals = yaml.safe_load(APPROVALS_FILE.read_text(encoding="utf-8"))
    approvals["actions"]["soc"]["host-isolate"]["steps"][0]["any_of"] = ["hr_lead"]
    approvals_path = write_policy(approvals, name="approvals.yaml")

    violations = run_checks(context(dag_folder(), policy_file=policy), [check_policy_valid])

    assert violations == [
        Violation(
            "policy-valid",
            display_path(approvals_path),
            f"{approvals_path}: actions.soc.host-isolate.steps.0.any_of.0: "
            "group 'hr_lead' does not approve in 'soc'",
        )
    ]


def policy_copy(name: str) -> dict:
    """A fresh, mutable copy of the deployed policy file ``name``."""
    return yaml.safe_load((POLICY_DIR / name).read_text(encoding="utf-8"))


def _tenant_account(document: dict) -> None:
    document["tenants"]["acme"]["aws_account_id"] = "0111"


def _triage_severity(document: dict) -> None:
    document["rules"][0]["severity"] = "urgent"


def _triage_unknown_key(document: dict) -> None:
    document["default"]["owner"] = "support"


def _capability_domain(document: dict) -> None:
    document["capabilities"]["ticket-create"]["domains"] = ["payroll"]


def _hr_role_group(document: dict) -> None:
    document["roles"]["finance"]["directory_groups"] = ["staff", "finance", "accounting"]


def _invoicing_tenant(document: dict) -> None:
    document["customers"]["initech"] = {"erp_customer_number": "C-99"}


@pytest.mark.parametrize(
    ("name", "edit", "problem"),
    [
        pytest.param(
            "tenants.yaml",
            _tenant_account,
            "tenants.acme.aws_account_id: '0111' is not a quoted 12-digit AWS account id",
            id="tenants",
        ),
        pytest.param(
            "support_triage.yaml",
            _triage_severity,
            "rules.0.severity: 'urgent' is not one of low, medium, high, critical",
            id="support-triage",
        ),
        pytest.param(
            "support_triage.yaml",
            _triage_unknown_key,
            "default: Additional properties are not allowed ('owner' was unexpected)",
            id="support-triage-unknown-key",
        ),
        pytest.param(
            "capabilities.yaml",
            _capability_domain,
            f"capabilities.ticket-create.domains.0: unknown domain 'payroll' (declared: {DECLARED})",
            id="capabilities",
        ),
        pytest.param(
            "hr_roles.yaml",
            _hr_role_group,
            "roles.finance.directory_groups.2: unknown directory group 'accounting' (declared: "
            + ", ".join(sorted(policy_copy("hr_roles.yaml")["groups"]["directory"]))
            + ")",
            id="hr-roles",
        ),
        pytest.param(
            "invoicing.yaml",
            _invoicing_tenant,
            "customers.initech: unknown tenant (declared in tenants.yaml: acme, globex)",
            id="invoicing",
        ),
    ],
)
def test_policy_valid_names_the_file_and_key_of_every_policy_file(
    dag_folder, policy_document, write_policy, name, edit, problem
):
    policy = write_policy(policy_document)
    write_policy(policy_copy("approvals.yaml"), name="approvals.yaml")
    broken = policy_copy(name)
    edit(broken)
    path = write_policy(broken, name=name)

    violations = run_checks(context(dag_folder(), policy_file=policy), [check_policy_valid])

    assert violations == [Violation("policy-valid", display_path(path), f"{path}: {problem}")]


def test_policy_check_fails_on_a_broken_tenants_file(dag_folder, policy_document, write_policy, capsys):
    policy = write_policy(policy_document)
    write_policy(policy_copy("approvals.yaml"), name="approvals.yaml")
    tenants = policy_copy("tenants.yaml")
    tenants["tenants"]["globex"]["aws_account_id"] = tenants["tenants"]["acme"]["aws_account_id"]
    path = write_policy(tenants, name="tenants.yaml")
    folder = dag_folder(good=factory_dag("support", "triage"))

    argv = ["--dags-folder", str(folder), "--include-folder", "", "--policy", str(policy)]
    assert checks.handle(parse(argv)) == 1

    assert capsys.readouterr().out.splitlines() == [
        f"policy-valid: {display_path(path)}: {path}: tenants.globex.aws_account_id: 111111111111 is "
        "also the account of tenant 'acme'; every tenant needs an AWS account of its own",
        "policy-check FAILED: 1 violation(s) (policy-valid 1)",
    ]


def test_triage_and_invoicing_are_checked_against_the_tenants_next_to_them(
    dag_folder, policy_document, write_policy
):
    policy = write_policy(policy_document)
    write_policy(policy_copy("approvals.yaml"), name="approvals.yaml")
    tenants = policy_copy("tenants.yaml")
    del tenants["tenants"]["globex"]
    write_policy(tenants, name="tenants.yaml")
    triage = write_policy(policy_copy("support_triage.yaml"), name="support_triage.yaml")
    invoicing = write_policy(policy_copy("invoicing.yaml"), name="invoicing.yaml")

    violations = run_checks(context(dag_folder(), policy_file=policy), [check_policy_valid])

    assert violations == [
        Violation(
            "policy-valid",
            display_path(triage),
            f"{triage}: tenants.globex.example: unknown tenant 'globex' (known: acme)",
        ),
        Violation(
            "policy-valid",
            display_path(invoicing),
            f"{invoicing}: customers.globex: unknown tenant (declared in tenants.yaml: acme)",
        ),
    ]


def test_a_broken_tenants_file_holds_back_the_files_checked_against_it(
    dag_folder, policy_document, write_policy
):
    policy = write_policy(policy_document)
    write_policy(policy_copy("approvals.yaml"), name="approvals.yaml")
    tenants = write_policy("platform: {aws_account_id: '123456789012'}\n", name="tenants.yaml")
    triage = policy_copy("support_triage.yaml")
    triage["tenants"]["initech.example"] = "initech"
    write_policy(triage, name="support_triage.yaml")

    violations = run_checks(context(dag_folder(), policy_file=policy), [check_policy_valid])

    assert violations == [
        Violation(
            "policy-valid", display_path(tenants), f"{tenants}: <root>: 'tenants' is a required property"
        )
    ]


def test_policy_valid_reports_unparsable_yaml(dag_folder, write_policy):
    policy = write_policy("version: 1\ndomains: [unclosed\n")

    violations = run_checks(context(dag_folder(), policy_file=policy), [check_policy_valid])

    (violation,) = violations
    assert (violation.rule, violation.location) == ("policy-valid", display_path(policy))
    # libyaml's wording ("did not find expected ',' or ']'"); the pure-Python loader's differs.
    assert violation.message.startswith(f"{policy}: line 3 column 1: not valid YAML: ")
    assert "expected ',' or ']'" in violation.message


def test_invalid_policy_skips_domain_rules(dag_folder, write_policy):
    folder = dag_folder(rogue=plain_dag("rogue", ["domain:marketing"]))
    policy = write_policy("version: 2\n")

    violations = run_checks(context(folder, policy_file=policy))

    assert [v.rule for v in violations] == ["policy-valid"] * 3


# --------------------------------------------------------------------------------------------
# dag-imports


def test_dag_imports_reports_file_and_last_error_line(dag_folder):
    folder = dag_folder(
        good=factory_dag("support", "triage"),
        broken='raise RuntimeError("ticketing client misconfigured")\n',
        unknown_domain=factory_dag("marketing", "campaign"),
    )

    violations = run_checks(context(folder), [check_dag_imports])

    broken, unknown = display_path(folder / "broken.py"), display_path(folder / "unknown_domain.py")
    assert violations == [
        Violation(
            "dag-imports",
            broken,
            f"DAG file {broken} does not import: RuntimeError: ticketing client misconfigured",
        ),
        Violation(
            "dag-imports",
            unknown,
            f"DAG file {unknown} does not import: include.policies.loader.PolicyError: unknown domain "
            f"'marketing': declared domains in {DOMAINS_FILE} are {DECLARED}",
        ),
    ]


# --------------------------------------------------------------------------------------------
# known-domain


def test_known_domain(dag_folder):
    folder = dag_folder(
        good=factory_dag("support", "triage"),
        marketing=plain_dag("marketing_campaign", ["domain:marketing"]),
        untagged=plain_dag("untagged", ["reporting"]),
        two_domains=plain_dag("shared_flow", ["domain:soc", "domain:hr"]),
    )

    violations = run_checks(context(folder), [check_known_domain])

    assert violations == [
        Violation(
            "known-domain",
            where(folder, "marketing", "marketing_campaign"),
            "DAG marketing_campaign is tagged domain:marketing but 'marketing' is not a declared domain "
            f"(declared: {DECLARED})",
        ),
        Violation(
            "known-domain",
            where(folder, "two_domains", "shared_flow"),
            "DAG shared_flow has 2 domain tags (domain:hr, domain:soc); it must have exactly one",
        ),
        Violation(
            "known-domain",
            where(folder, "untagged", "untagged"),
            f"DAG untagged has no domain tag (expected one of: {DECLARED})",
        ),
    ]


# --------------------------------------------------------------------------------------------
# domain-pool


def test_domain_pool(dag_folder):
    folder = dag_folder(
        good=factory_dag("support", "triage"),
        service_check=factory_dag(
            "support",
            "check_smtp_relay",
            task_args='pool="default_pool"',
            dag_args=', dag_id="support_service_check"',
        ),
        hand_made=plain_dag("hr_hand_made", ["domain:hr"], task_args='pool="soc"'),
        marketing=plain_dag("marketing_campaign", ["domain:marketing"]),
    )

    violations = run_checks(context(folder), [check_domain_pool])

    assert violations == [
        Violation(
            "domain-pool",
            where(folder, "hand_made", "hr_hand_made", "step"),
            "DAG hr_hand_made task step runs in pool 'soc', not its domain pool 'hr'",
        ),
        Violation(
            "domain-pool",
            where(folder, "service_check", "support_service_check", "step"),
            "DAG support_service_check task step runs in pool 'default_pool', not its domain pool 'support'",
        ),
    ]


# --------------------------------------------------------------------------------------------
# domain-settings


def test_domain_settings_catches_hand_made_dag(dag_folder):
    folder = dag_folder(good=factory_dag("hr", "onboard"), hand_made=plain_dag("hr_offboard", ["domain:hr"]))

    violations = run_checks(context(folder), [check_domain_settings])

    dag, step = where(folder, "hand_made", "hr_offboard"), where(folder, "hand_made", "hr_offboard", "step")
    assert violations == [
        Violation(
            "domain-settings", dag, "DAG hr_offboard has max_active_runs 16, not its domain max_active_runs 8"
        ),
        Violation(
            "domain-settings",
            dag,
            "DAG hr_offboard has max_active_tasks 16, not its domain max_active_tasks 8",
        ),
        Violation(
            "domain-settings",
            step,
            "DAG hr_offboard task step has owner 'airflow', not its domain owner 'hr-operations'",
        ),
        Violation(
            "domain-settings",
            step,
            "DAG hr_offboard task step has priority_weight 1, not its domain priority_weight 50",
        ),
        Violation(
            "domain-settings",
            step,
            "DAG hr_offboard task step has weight_rule 'downstream', not its domain weight_rule 'absolute'",
        ),
    ]


def test_domain_settings_catches_task_overrides(dag_folder):
    folder = dag_folder(
        isolate=factory_dag("soc", "isolate_host", task_args='owner="mallory", priority_weight=500')
    )

    violations = run_checks(context(folder), [check_domain_settings])

    step = where(folder, "isolate", "soc_isolate_host", "step")
    assert violations == [
        Violation(
            "domain-settings",
            step,
            "DAG soc_isolate_host task step has owner 'mallory', not its domain owner 'soc'",
        ),
        Violation(
            "domain-settings",
            step,
            "DAG soc_isolate_host task step has priority_weight 500, not its domain priority_weight 100",
        ),
    ]


# --------------------------------------------------------------------------------------------
# no-literal-secrets (every fake credential is assembled at run time: this file holds none)

FAKE_ACCESS_KEY_ID = "AKIA" + "Q" * 16
FAKE_SECRET_KEY = "wJalr" + "XUtnFEMIK7MDENG" + "bPxRfiCY" + "x" * 12
FAKE_GITHUB = "ghp" + "_" + "a1" * 18
FAKE_GITLAB = "glpat" + "-" + "b2" * 10
FAKE_SLACK = "xoxb" + "-" + "1234567890-abcdef"
FAKE_PASSWORD = "hunter" + "2hunter2"
PRIVATE_KEY_HEADER = "-----BEGIN " + "RSA PRIVATE KEY-----"


@pytest.mark.parametrize(
    ("source", "description"),
    [
        pytest.param(
            f'aws_secret_access_key = "{FAKE_SECRET_KEY}"\n',
            f"literal AWS secret access key assigned to aws_secret_access_key ('{'*' * 40}')",
            id="aws-secret-key",
        ),
        pytest.param(
            f'KEY_ID = "{FAKE_ACCESS_KEY_ID}"\n',
            "AWS access key id 'AKIA****************' in a literal",
            id="aws-access-key-id",
        ),
        pytest.param(
            f'KEY = """{PRIVATE_KEY_HEADER}\nMIIB\n"""\n',
            f"private key block '{PRIVATE_KEY_HEADER}' in a literal",
            id="private-key",
        ),
        pytest.param(
            f'client(token="{FAKE_GITHUB}")\n',
            f"GitHub token 'ghp_{'*' * 36}' in a literal",
            id="github-token",
        ),
        pytest.param(
            f'T = "{FAKE_GITLAB}"\n', f"GitLab token 'glpat-{'*' * 20}' in a literal", id="gitlab-token"
        ),
        pytest.param(
            f'HOOK = "{FAKE_SLACK}"\n', f"Slack token 'xoxb-{'*' * 17}' in a literal", id="slack-token"
        ),
        pytest.param(
            f'password = "{FAKE_PASSWORD}"\n',
            "literal credential assigned to password ('**************')",
            id="password-assignment",
        ),
        pytest.param(
            f'settings = {{"api_key": "{FAKE_PASSWORD}"}}\n',
            "literal credential assigned to api_key ('**************')",
            id="dict-item",
        ),
        pytest.param(
            f'def connect(secret: str = "{FAKE_PASSWORD}"): ...\n',
            "literal credential assigned to secret ('**************')",
            id="argument-default",
        ),
        pytest.param(
            f'self.db_passwd = "{FAKE_PASSWORD}"\n',
            "literal credential assigned to db_passwd ('**************')",
            id="attribute",
        ),
        pytest.param(
            f'DSN = "postgresql://airflow:{FAKE_PASSWORD}@db:5432/airflow"\n',
            "connection URI with an inline password 'postgresql://airflow:**************'",
            id="uri-password",
        ),
    ],
)
def test_literal_secret_found_and_masked(tmp_path, source, description):
    path = tmp_path / "leaky.py"
    path.write_text(source, encoding="utf-8")

    findings = find_literal_secrets(path)

    assert [(f.line, f.description, f.allowed) for f in findings] == [(1, description, False)]
    assert FAKE_PASSWORD not in description
    assert FAKE_SECRET_KEY not in description


@pytest.mark.parametrize(
    "source",
    [
        pytest.param('password = Variable.get("smtp_password")\n', id="from-variable"),
        pytest.param('client(password=conn.password, token=get_token("x"))\n', id="from-call"),
        pytest.param('token_name = "orchestrator-ticketing"\n', id="name-not-a-credential"),
        pytest.param('secret_name = "orchestrator/acme/support/service-check"\n', id="secret-name"),
        pytest.param('password = "{{ conn.smtp.password }}"\n', id="jinja-template"),
        pytest.param('api_key = "${API_KEY}"\n', id="env-reference"),
        pytest.param('token = "short"\n', id="too-short"),
        pytest.param('password = "****************"\n', id="masked"),
        pytest.param('secret = "the secret is kept in Keeper"\n', id="prose"),
        pytest.param('URL = "postgresql://airflow@db:5432/airflow"\n', id="uri-without-password"),
        pytest.param('URL = f"postgresql://{user}:{password}@{host}/airflow"\n', id="uri-from-variables"),
        pytest.param('URL = "https://example.com/a:b@c"\n', id="colon-in-path"),
    ],
)
def test_no_false_positive(tmp_path, source):
    path = tmp_path / "clean.py"
    path.write_text(source, encoding="utf-8")

    assert find_literal_secrets(path) == []


def test_non_python_files_are_scanned_line_by_line(tmp_path):
    path = tmp_path / "settings.yaml"
    path.write_text(
        f"smtp:\n  host: relay\n  password: {FAKE_PASSWORD}\n  token: ${{SMTP_TOKEN}}\n", encoding="utf-8"
    )

    findings = find_literal_secrets(path)

    assert [(f.line, f.description) for f in findings] == [
        (3, "literal credential assigned to password ('**************')")
    ]


def test_file_that_does_not_parse_is_still_scanned(tmp_path):
    path = tmp_path / "broken.py"
    path.write_text(f'def broken(:\npassword = "{FAKE_PASSWORD}"\n', encoding="utf-8")

    assert [f.line for f in find_literal_secrets(path)] == [2]


def test_no_literal_secrets_rule_reports_location_and_counts_opt_outs(dag_folder):
    folder = dag_folder(
        good=factory_dag("support", "triage"),
        leaky=f'import boto3\n\nclient = boto3.client("s3", aws_secret_access_key="{FAKE_SECRET_KEY}")\n',
        opted_out=f'MOTO_PASSWORD = "{FAKE_PASSWORD}"  # policy: allow-literal moto accepts any key\n',
        no_reason=f'SMTP_PASSWORD = "{FAKE_PASSWORD}"  # policy: allow-literal\n',
    )
    (folder / "tests").mkdir()
    (folder / "tests" / "fixture.py").write_text(f'password = "{FAKE_PASSWORD}"\n', encoding="utf-8")
    ctx = context(folder, secret_scan_roots=(folder,))

    violations = run_checks(ctx, [check_no_literal_secrets])

    leaky, no_reason = display_path(folder / "leaky.py"), display_path(folder / "no_reason.py")
    assert violations == [
        Violation(
            "no-literal-secrets",
            f"{leaky}:3",
            f"{leaky} line 3: literal AWS secret access key assigned to aws_secret_access_key ('{'*' * 40}')",
        ),
        Violation(
            "no-literal-secrets",
            f"{no_reason}:1",
            f"{no_reason} line 1: literal credential assigned to SMTP_PASSWORD ('**************')",
        ),
    ]
    assert ctx.allowed_literals == [f"{display_path(folder / 'opted_out.py')}:1"]


# --------------------------------------------------------------------------------------------
# parse-budget


def test_parse_budget(dag_folder):
    folder = dag_folder(
        good=factory_dag("support", "triage"),
        slow="import time\n\ntime.sleep(0.5)  # e.g. an API call at import time\n",
    )
    ctx = context(folder, parse_budget_seconds=0.3)

    violations = run_checks(ctx, [check_parse_budget])

    slow = display_path(folder / "slow.py")
    assert [(v.rule, v.location) for v in violations] == [("parse-budget", slow)]
    assert re.fullmatch(
        rf"DAG file {re.escape(slow)} took 0\.[5-9]\d s to parse, over the 0\.30 s budget",
        violations[0].message,
    )
    assert set(ctx.dag_scan.parse_seconds) == {folder / "good.py", folder / "slow.py"}


# --------------------------------------------------------------------------------------------
# The command


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    checks.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["policy-check", *argv])


def test_defaults():
    args = parse([])

    assert Path(args.dags_folder) == DEFAULT_DAGS_FOLDER
    assert Path(args.policy) == DOMAINS_FILE
    assert Path(args.include_folder) == DEFAULT_INCLUDE_FOLDER
    assert args.parse_budget_seconds == 2.0
    assert args.format == "text"
    assert args.handler is checks.handle


def test_real_repository_has_no_violations():
    ctx = CheckContext(
        dags_folder=DEFAULT_DAGS_FOLDER,
        policy_file=DOMAINS_FILE,
        secret_scan_roots=(DEFAULT_DAGS_FOLDER, DEFAULT_INCLUDE_FOLDER),
    )

    assert run_checks(ctx) == []
    assert len(ctx.dag_scan.dags) >= 5


def test_real_repository_text_ok_line(capsys):
    assert checks.handle(parse([])) == 0

    [line] = capsys.readouterr().out.splitlines()
    assert re.fullmatch(
        r"policy-check OK: \d+ DAG\(s\) in \d+ file\(s\), slowest parse \d+\.\d\d s \(\S+\.py\), "
        r"budget 2\.00 s, \d+ literal\(s\) allowed by opt-out",
        line,
    )


def test_failure_prints_each_violation_and_returns_1(dag_folder, capsys):
    folder = dag_folder(
        marketing=plain_dag("marketing_campaign", ["domain:marketing"]),
        broken='raise RuntimeError("boom")\n',
    )

    assert checks.handle(parse(["--dags-folder", str(folder), "--include-folder", ""])) == 1

    broken = display_path(folder / "broken.py")
    assert capsys.readouterr().out.splitlines() == [
        f"dag-imports: {broken}: DAG file {broken} does not import: RuntimeError: boom",
        f"known-domain: {where(folder, 'marketing', 'marketing_campaign')}: DAG marketing_campaign is tagged "
        f"domain:marketing but 'marketing' is not a declared domain (declared: {DECLARED})",
        "policy-check FAILED: 2 violation(s) (dag-imports 1, known-domain 1)",
    ]


def test_json_format_lists_parse_times(dag_folder, capsys):
    folder = dag_folder(good=factory_dag("invoicing", "from_contract"))

    assert (
        checks.handle(parse(["--dags-folder", str(folder), "--include-folder", "", "--format", "json"])) == 0
    )

    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True
    assert report["violations"] == []
    assert (report["dags"], report["files"], report["parse_budget_seconds"]) == (1, 1, 2.0)
    assert list(report["parse_seconds"]) == [display_path(folder / "good.py")]
    assert report["parse_seconds"][display_path(folder / "good.py")] < 2.0


# --------------------------------------------------------------------------------------------
# dag-serializes


def test_dag_that_cannot_be_serialized_is_named(dag_folder):
    folder = dag_folder(
        shadow='''
        """A template field named like BaseOperator's executor ``queue``."""
        from airflow.providers.standard.operators.empty import EmptyOperator

        from include.workflows import domain_workflow


        class QueueShadow(EmptyOperator):
            template_fields = ("queue",)


        @domain_workflow(domain="support", dag_id="shadow_queue", doc_md=__doc__)
        def shadow():
            QueueShadow(task_id="step", queue="support")


        shadow()
        '''
    )

    violations = run_checks(context(folder), [check_dag_serializes])

    assert violations == [
        Violation(
            "dag-serializes",
            where(folder, "shadow", "shadow_queue"),
            "DAG shadow_queue cannot be serialized: Failed to serialize DAG 'shadow_queue': Cannot template "
            "BaseOperator field: 'queue' op.__class__.__name__='QueueShadow' op.template_fields=('queue',)",
        )
    ]


def test_real_dags_serialize():
    assert run_checks(context(DEFAULT_DAGS_FOLDER), [check_dag_serializes]) == []


# --------------------------------------------------------------------------------------------
# approval-before-privileged

PRIVILEGED_DAG = '''
"""Containment with or without a gate."""
from airflow.providers.standard.operators.empty import EmptyOperator

from include.workflows import domain_workflow


class Gate(EmptyOperator):
    approval_action = "{gate_action}"


class Isolate(EmptyOperator):
    capability = "{capability}"


@domain_workflow(domain="soc", dag_id="containment", doc_md=__doc__)
def containment():
    gate = Gate(task_id="approve")
    step = Isolate(task_id="isolate_host")
    {wiring}


containment()
'''
CAPABILITIES = (
    "audit-seal, compliance-export-readonly, device-inspect, device-isolate, device-release, "
    "entra-user-disable, "
    "entra-user-enable, entra-user-inspect, "
    "host-inspect, host-isolate, identity-admin, identity-disable, "
    "identity-inspect, incident-writeback, invoice-post, perimeter-block, perimeter-inspect, "
    "terraform-apply, terraform-plan, "
    "ticket-create, ticket-update"
)


@pytest.mark.parametrize(
    ("gate_action", "capability", "wiring", "expected"),
    [
        pytest.param("host-isolate", "host-isolate", "gate >> step", None, id="gate-upstream"),
        pytest.param(
            "host-isolate",
            "host-isolate",
            "step >> gate",
            "uses privileged capability 'host-isolate' without an approval gate for it upstream",
            id="gate-downstream",
        ),
        pytest.param(
            "identity-disable",
            "host-isolate",
            "gate >> step",
            "uses privileged capability 'host-isolate' without an approval gate for it upstream",
            id="gate-for-another-action",
        ),
        pytest.param(
            "host-isolate",
            "host-isolate",
            "pass",
            "uses privileged capability 'host-isolate' without an approval gate for it upstream",
            id="no-wiring",
        ),
        pytest.param(
            "host-isolate",
            "host-isolate",
            "gate >> step; step.trigger_rule = 'all_done'",
            "uses privileged capability 'host-isolate' with trigger_rule all_done: it must be "
            "all_success, or a rejected approval would not stop it",
            id="runs-even-if-rejected",
        ),
        pytest.param("x", "ticket-create", "pass", None, id="not-privileged"),
        pytest.param(
            "x",
            "launch-missiles",
            "gate >> step",
            f"uses capability 'launch-missiles', which is not declared (declared: {CAPABILITIES})",
            id="undeclared",
        ),
    ],
)
def test_privileged_step_needs_its_approval_gate_upstream(
    dag_folder, gate_action, capability, wiring, expected
):
    source = PRIVILEGED_DAG.format(gate_action=gate_action, capability=capability, wiring=wiring)
    folder = dag_folder(containment=source)

    violations = run_checks(context(folder), [check_approval_before_privileged])

    if expected is None:
        assert violations == []
    else:
        assert violations == [
            Violation(
                "approval-before-privileged",
                where(folder, "containment", "containment", "isolate_host"),
                f"DAG containment task isolate_host {expected}",
            )
        ]


REAL_GATE_DAG = '''
"""Containment behind the platform's approval gate."""
from airflow.providers.standard.operators.empty import EmptyOperator

from include.workflows import domain_workflow
from include.workflows.approval import approval_gate


class Isolate(EmptyOperator):
    capability = "host-isolate"


@domain_workflow(domain="{domain}", dag_id="containment", doc_md=__doc__)
def containment():
    approval_gate("{action}", subject="Isolate web-01", body="EDR containment of web-01") >> Isolate(
        task_id="isolate_host"
    )


containment()
'''


def test_the_platform_gate_satisfies_the_rule(dag_folder):
    folder = dag_folder(containment=REAL_GATE_DAG.format(domain="soc", action="host-isolate"))
    assert run_checks(context(folder), [check_dag_imports, check_approval_before_privileged]) == []


def test_a_gate_for_an_action_without_approvers_does_not_import(dag_folder):
    folder = dag_folder(containment=REAL_GATE_DAG.format(domain="support", action="host-isolate"))
    (violation,) = run_checks(context(folder), [check_dag_imports])
    assert violation.rule == "dag-imports"
    assert "no approval rule for action 'host-isolate' in domain 'support'" in violation.message


MAPPED_DAG = '''
"""Containment of many hosts, one mapped task each."""
from airflow.sdk import BaseOperator

from include.workflows import domain_workflow
from include.workflows.approval import approval_gate


class Isolate(BaseOperator):
    capability = "host-isolate"

    def __init__(self, *, host, **kwargs):
        super().__init__(**kwargs)
        self.host = host

    def execute(self, context):
        return self.host


@domain_workflow(domain="soc", dag_id="containment", doc_md=__doc__)
def containment():
    isolate = Isolate.partial(task_id="isolate_host").expand(host=["web-01", "web-02"])
    {wiring}


containment()
'''


@pytest.mark.parametrize(
    ("wiring", "violated"),
    [
        ("approval_gate('host-isolate', subject='Isolate', body='EDR') >> isolate", False),
        ("pass", True),
    ],
    ids=["gated", "ungated"],
)
def test_a_mapped_privileged_step_needs_its_gate_too(dag_folder, wiring, violated):
    folder = dag_folder(containment=MAPPED_DAG.format(wiring=wiring))

    violations = run_checks(context(folder), [check_dag_imports, check_approval_before_privileged])

    assert [v.message for v in violations] == (
        [
            "DAG containment task isolate_host uses privileged capability 'host-isolate' without an "
            "approval gate for it upstream"
        ]
        if violated
        else []
    )
