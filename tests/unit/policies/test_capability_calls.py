"""policy-check rules capability-calls and capability-domain: each path on a tiny tree, and the real repo."""

from __future__ import annotations

import argparse
import ast
import re
import shutil
import textwrap
from pathlib import Path

import pytest

from include.policies import checks
from include.policies.capabilities import load_capabilities
from include.policies.capability_calls import scan, task_line
from include.policies.checks import (
    DEFAULT_DAGS_FOLDER,
    DEFAULT_INCLUDE_FOLDER,
    DEFAULT_PLUGINS_FOLDER,
    CheckContext,
    Violation,
    check_capability_calls,
    check_capability_domain,
    code_scan_roots,
    display_path,
    run_checks,
)
from include.policies.loader import DOMAINS_FILE

UNAPPROVED = (
    "but does not inherit RequiresApproval (include/approvals/verify.py): nothing would check its "
    "approval when it runs"
)
COMPUTED = "with a computed capability: name it literally so the policy can check it"
DECLARED_CAPABILITIES = (
    "audit-seal, compliance-export-readonly, device-inspect, device-isolate, device-release, "
    "entra-user-disable, "
    "entra-user-enable, entra-user-inspect, "
    "host-inspect, host-isolate, identity-admin, identity-disable, "
    "identity-inspect, incident-writeback, invoice-post, perimeter-block, perimeter-inspect, "
    "terraform-apply, terraform-plan, "
    "ticket-create, ticket-update"
)


def line_of(path: Path, text: str) -> int:
    """The line of ``path`` holding ``text`` (exactly once), so expectations survive edits above it."""
    lines = [n for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if text in line]
    assert len(lines) == 1, (text, lines)
    return lines[0]


def write(root: Path, relative: str, source: str) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source).lstrip(), encoding="utf-8")
    return path


# --------------------------------------------------------------------------------------------
# capability-calls: DAG files

CALLING_DAG = '''
"""Containment by hand, without the operator."""
from airflow.sdk import task

from include.workflows import domain_workflow
{imports}


@domain_workflow(domain="{domain}", dag_id="by_hand", doc_md=__doc__)
def by_hand():
    @task
    def contain(tenant="acme"):
        {call}

    contain()


by_hand()
'''
AWS = "from include.connectors.aws import capability_client"
EC2_HOOK = "from include.connectors.ec2 import Ec2Hook"


@pytest.mark.parametrize(
    ("domain", "imports", "call", "expected"),
    [
        pytest.param(
            "soc",
            AWS,
            'return capability_client("host-isolate", tenant, "ec2", run_context=None)',
            [
                "DAG by_hand task contain uses privileged capability 'host-isolate' directly, not behind "
                "an approval gate (use its operator)"
            ],
            id="task-calls-capability-client",
        ),
        pytest.param(
            "soc",
            "from include.connectors.aws import capability_client as client_for",
            'return client_for("host-isolate", tenant, "ec2", run_context=None)',
            [
                "DAG by_hand task contain uses privileged capability 'host-isolate' directly, not behind "
                "an approval gate (use its operator)"
            ],
            id="aliased-import",
        ),
        pytest.param(
            "soc",
            "import include.connectors.aws as cloud",
            'return cloud.capability_client(capability="host-isolate", tenant=tenant, service="ec2")',
            [
                "DAG by_hand task contain uses privileged capability 'host-isolate' directly, not behind "
                "an approval gate (use its operator)"
            ],
            id="aliased-module-keyword-argument",
        ),
        pytest.param(
            "hr",
            "from include.connectors import aws",
            'return aws.capability_session("identity-disable", tenant, run_context=None)',
            [
                "DAG by_hand task contain uses privileged capability 'identity-disable' directly, not "
                "behind an approval gate (use its operator)"
            ],
            id="module-attribute-capability-session",
        ),
        pytest.param(
            "soc",
            "from include.connectors.terraform import capability_environment",
            'return capability_environment("terraform-plan", tenant, None)',
            [
                "DAG by_hand task contain uses capability 'terraform-plan' of domains [implementation], "
                "not granted to domain 'soc'"
            ],
            id="capability-of-another-domain",
        ),
        pytest.param(
            "implementation",
            "from include.connectors.identity_center import IdentityCenterHook",
            'return IdentityCenterHook(capability="identity-admin", tenant=tenant).user_id("ada")',
            [
                "DAG by_hand task contain uses privileged capability 'identity-admin' directly, not "
                "behind an approval gate (use its operator)",
                "DAG by_hand task contain uses capability 'identity-admin' of domains [hr], not granted "
                "to domain 'implementation'",
            ],
            id="privileged-and-another-domain",
        ),
        pytest.param(
            "soc",
            AWS,
            'return capability_client("host-" + "isolate", tenant, "ec2", run_context=None)',
            [f"DAG by_hand task contain calls capability_client {COMPUTED}"],
            id="computed-capability",
        ),
        pytest.param(
            "soc",
            AWS,
            "return capability_client(*('host-isolate', tenant, 'ec2'), run_context=None)",
            [f"DAG by_hand task contain calls capability_client {COMPUTED}"],
            id="unpacked-arguments",
        ),
        pytest.param(
            "soc",
            AWS,
            'return capability_client("launch-missiles", tenant, "ec2", run_context=None)',
            [
                "DAG by_hand task contain uses capability 'launch-missiles', which is not declared "
                f"(declared: {DECLARED_CAPABILITIES})"
            ],
            id="undeclared-capability",
        ),
        pytest.param(
            "soc",
            f'{AWS}\n\nCAPABILITY = "host-isolate"',
            'return capability_client(CAPABILITY, tenant, "ec2", run_context=None)',
            [
                "DAG by_hand task contain uses privileged capability 'host-isolate' directly, not behind "
                "an approval gate (use its operator)"
            ],
            id="module-constant-is-a-literal",
        ),
        pytest.param(
            "soc",
            f"import functools\n\n{AWS}",
            'return functools.partial(capability_client, "host-isolate")',
            [
                "DAG by_hand task contain uses capability_client without calling it: call it directly, "
                "with a literal capability, so the policy can check it"
            ],
            id="passed-around-not-called",
        ),
        pytest.param(
            "soc",
            AWS,
            'return capability_client("host-inspect", tenant, "ec2", run_context=None)',
            [],
            id="read-only-capability-of-its-domain",
        ),
        pytest.param(
            "soc",
            EC2_HOOK,
            'return Ec2Hook("host-inspect", capability="host-isolate", tenant=tenant).isolate("i-1")',
            [
                "DAG by_hand task contain uses privileged capability 'host-isolate' directly, not behind "
                "an approval gate (use its operator)"
            ],
            id="hook-capability-keyword-not-the-connection-id",
        ),
        pytest.param(
            "soc",
            "from include.connectors import iam",
            'return iam.IamHook(capability="identity-disable", tenant=tenant).disable_user("x")',
            [
                "DAG by_hand task contain uses privileged capability 'identity-disable' directly, not "
                "behind an approval gate (use its operator)"
            ],
            id="hook-through-its-module",
        ),
        pytest.param(
            "soc",
            EC2_HOOK,
            'return Ec2Hook(capability="host-inspect", tenant=tenant).plan_isolation("i-1")',
            [],
            id="read-only-hook-of-its-domain",
        ),
        pytest.param(
            "soc",
            EC2_HOOK,
            'return Ec2Hook("host-isolate", tenant=tenant).plan_isolation("i-1")',
            [f"DAG by_hand task contain calls Ec2Hook {COMPUTED}"],
            id="hook-without-capability-keyword",
        ),
    ],
)
def test_capability_calls_in_a_dag_file(dag_folder, domain, imports, call, expected):
    folder = dag_folder(by_hand=CALLING_DAG.format(domain=domain, imports=imports, call=call))
    path = folder / "by_hand.py"

    violations = run_checks(CheckContext(dags_folder=folder), [check_capability_calls])

    location = f"{display_path(path)}:{line_of(path, call)}"
    assert violations == [Violation("capability-calls", location, message) for message in expected]


def test_a_helper_module_takes_the_domain_of_its_folder(dag_folder):
    folder = dag_folder()
    helper = write(
        folder,
        "implementation/helpers.py",
        """
        from include.connectors.aws import capability_client


        def inspect(run):
            return capability_client("host-inspect", "acme", "ec2", run_context=run)
        """,
    )

    violations = run_checks(CheckContext(dags_folder=folder), [check_capability_calls])

    assert violations == [
        Violation(
            "capability-calls",
            f"{display_path(helper)}:5",
            "function inspect uses capability 'host-inspect' of domains [soc], not granted to domain "
            "'implementation'",
        )
    ]


def test_policy_check_prints_the_file_and_line(dag_folder, capsys):
    call = 'return capability_client("host-isolate", tenant, "ec2", run_context=None)'
    folder = dag_folder(by_hand=CALLING_DAG.format(domain="soc", imports=AWS, call=call))
    path = folder / "by_hand.py"

    argv = ["policy-check", "--dags-folder", str(folder), "--include-folder", ""]
    assert checks.handle(parse(argv)) == 1

    assert capsys.readouterr().out.splitlines() == [
        f"capability-calls: {display_path(path)}:{line_of(path, call)}: DAG by_hand task contain uses "
        "privileged capability 'host-isolate' directly, not behind an approval gate (use its operator)",
        "policy-check FAILED: 1 violation(s) (capability-calls 1)",
    ]


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    checks.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


# --------------------------------------------------------------------------------------------
# capability-calls: platform code (include/, plugins/)

ISOLATE = """
from airflow.sdk import BaseOperator

from include.approvals.verify import RequiresApproval
from include.connectors.aws import capability_client, capability_session


{code}
"""


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        pytest.param(
            """
            class QuickIsolate(BaseOperator):
                def execute(self, context):
                    return capability_client("host-isolate", "acme", "ec2", run_context=context)
            """,
            [
                (
                    "capability_client(",
                    f"class QuickIsolate uses privileged capability 'host-isolate' {UNAPPROVED}",
                )
            ],
            id="privileged-literal-outside-requires-approval",
        ),
        pytest.param(
            """
            class QuickIsolate(RequiresApproval, BaseOperator):
                capability = "host-isolate"

                def act(self, context):
                    return capability_client("host-isolate", "acme", "ec2", run_context=context)
            """,
            [],
            id="privileged-literal-inside-requires-approval",
        ),
        pytest.param(
            """
            class _Approved(RequiresApproval, BaseOperator):
                pass


            class QuickIsolate(_Approved):
                def act(self, context):
                    return capability_client("host-isolate", "acme", "ec2", run_context=context)
            """,
            [],
            id="requires-approval-through-a-base",
        ),
        pytest.param(
            """
            def isolate(run):
                return capability_session("host-isolate", "acme", run_context=run)
            """,
            [
                (
                    "capability_session(",
                    "function isolate uses privileged capability 'host-isolate' outside a class inheriting "
                    "RequiresApproval (include/approvals/verify.py): nothing would check its approval when "
                    "it runs",
                )
            ],
            id="privileged-literal-in-a-function",
        ),
        pytest.param(
            """
            def inspect(run):
                return capability_client("host-inspect", "acme", "ec2", run_context=run)
            """,
            [],
            id="read-only-literal-anywhere",
        ),
        pytest.param(
            """
            class _Step(BaseOperator):
                capability = ""

                def client(self, run):
                    return capability_client(self.capability, "acme", "ec2", run_context=run)


            class Inspect(_Step):
                capability = "host-inspect"


            class Isolate(_Step):
                capability = "host-isolate"
            """,
            [
                (
                    "class Isolate(_Step):",
                    "class Isolate uses privileged capability 'host-isolate' through self.capability in "
                    "_Step.client ({module}:{call}) " + UNAPPROVED,
                )
            ],
            id="self-capability-followed-into-subclasses",
        ),
        pytest.param(
            """
            class _Step(BaseOperator):
                capability = ""

                def client(self, run):
                    return capability_client(self.capability, "acme", "ec2", run_context=run)


            class Inspect(_Step):
                capability = "host-inspect"


            class Isolate(RequiresApproval, _Step):
                capability = "host-isolate"
            """,
            [],
            id="self-capability-privileged-subclass-requires-approval",
        ),
        pytest.param(
            """
            class _Step(BaseOperator):
                def client(self, context, capability):
                    return capability_client(capability, "acme", "ec2", run_context=context)


            class Isolate(_Step):
                def execute(self, context):
                    return self.client(context, "host-isolate")
            """,
            [
                (
                    'self.client(context, "host-isolate")',
                    "class Isolate uses privileged capability 'host-isolate' through _Step.client "
                    + UNAPPROVED,
                )
            ],
            id="parameter-followed-to-the-method-calls",
        ),
        pytest.param(
            """
            class _Step(BaseOperator):
                def client(self, context, capability):
                    return capability_client(capability, "acme", "ec2", run_context=context)


            class Isolate(RequiresApproval, _Step):
                def act(self, context):
                    return self.client(context, "host-isolate")
            """,
            [],
            id="parameter-of-a-requires-approval-subclass",
        ),
        pytest.param(
            """
            def client_for(capability, run):
                return capability_client(capability, "acme", "ec2", run_context=run)
            """,
            [("capability_client(", f"function client_for calls capability_client {COMPUTED}")],
            id="computed-in-a-function",
        ),
        pytest.param(
            """
            class Isolate(BaseOperator):
                def __init__(self, *, capability, **kwargs):
                    super().__init__(**kwargs)
                    self.capability = capability

                def execute(self, context):
                    return capability_client(self.capability, "acme", "ec2", run_context=context)
            """,
            [("capability_client(", f"class Isolate calls capability_client {COMPUTED}")],
            id="capability-set-on-the-instance",
        ),
        pytest.param(
            """
            class Isolate(RequiresApproval, BaseOperator):
                def act(self, context):
                    return capability_client(self.capability_for(context), "acme", "ec2", run_context=context)
            """,
            [],
            id="computed-inside-requires-approval",
        ),
    ],
)
def test_capability_calls_in_platform_code(tmp_path, dag_folder, code, expected):
    root = tmp_path / "plugins"
    module = write(root, "operators/isolate.py", ISOLATE.format(code=textwrap.dedent(code).strip()))
    call = line_of(module, "capability_client(") if "capability_client(" in module.read_text() else 0
    ctx = CheckContext(dags_folder=dag_folder(), code_scan_roots=(root,))

    violations = run_checks(ctx, [check_capability_calls])

    assert violations == [
        Violation(
            "capability-calls",
            f"{display_path(module)}:{line_of(module, marker)}",
            message.format(module=display_path(module), call=call),
        )
        for marker, message in expected
    ]


HOOK_STEPS = """
from functools import cached_property

from airflow.sdk import BaseOperator

from include.approvals.verify import RequiresApproval
from include.connectors.ec2 import Ec2Hook


class _Step(BaseOperator):
    capability = ""

    @cached_property
    def hook(self) -> Ec2Hook:
        return Ec2Hook(self.aws_conn_id, capability=self.capability, tenant=self.tenant)


class Inspect(_Step):
    capability = "host-inspect"


class Isolate({bases}_Step):
    capability = "host-isolate"
"""


@pytest.mark.parametrize(
    ("bases", "expected"),
    [
        pytest.param("", ["class Isolate"], id="privileged-hook-without-requires-approval"),
        pytest.param("RequiresApproval, ", [], id="privileged-hook-behind-requires-approval"),
    ],
)
def test_a_hook_built_with_self_capability_is_followed_into_subclasses(tmp_path, dag_folder, bases, expected):
    root = tmp_path / "include"
    module = write(root, "operators/steps.py", HOOK_STEPS.format(bases=bases))
    ctx = CheckContext(dags_folder=dag_folder(), code_scan_roots=(root,))

    violations = run_checks(ctx, [check_capability_calls])

    hook_line = line_of(module, "return Ec2Hook(")
    assert violations == [
        Violation(
            "capability-calls",
            f"{display_path(module)}:{line_of(module, marker)}",
            "class Isolate uses privileged capability 'host-isolate' through self.capability in _Step.hook "
            f"({display_path(module)}:{hook_line}) {UNAPPROVED}",
        )
        for marker in expected
    ]  # and the return annotation (-> Ec2Hook) is not "used without calling it"


def test_every_aws_capability_hook_is_known_to_the_rule():
    """A new AWS hook missing from CAPABILITY_FUNCTIONS would be a blind spot of the rule."""
    import include.connectors.ec2
    import include.connectors.iam
    import include.connectors.identity_center
    import include.connectors.perimeter  # noqa: F401 - they define the subclasses
    from include.connectors.aws import AwsCapabilityHook
    from include.connectors.microsoft import MicrosoftTenantHook
    from include.policies.capability_calls import CAPABILITY_FUNCTIONS, KEYWORD_ONLY

    def family(cls: type) -> set[type]:
        return {cls}.union(*(family(sub) for sub in cls.__subclasses__()))

    # and the hooks that read a capability's credential as its role (Microsoft Graph / Defender)
    hooks = {
        cls
        for cls in family(AwsCapabilityHook) | family(MicrosoftTenantHook)
        if cls.__module__.startswith("include.")
    }
    assert {cls.__name__ for cls in hooks} == KEYWORD_ONLY
    assert {cls.__name__: CAPABILITY_FUNCTIONS[cls.__name__] for cls in hooks} == {
        cls.__name__: cls.__module__.replace(".", "/") + ".py" for cls in hooks
    }


def test_the_defining_modules_and_tests_are_not_checked(tmp_path, dag_folder):
    root = tmp_path / "include"
    computed = "def client(capability, run):\n    return capability_client(capability, 'acme', 'ec2')\n"
    for relative in ("connectors/aws.py", "tests/test_x.py", "test_helpers.py"):
        write(root, relative, f"from include.connectors.aws import capability_client\n\n\n{computed}")
    ctx = CheckContext(dags_folder=dag_folder(), code_scan_roots=(root,))

    assert run_checks(ctx, [check_capability_calls]) == []


def test_a_subclass_in_a_dag_file_is_followed_too(tmp_path, dag_folder):
    root = tmp_path / "plugins"
    steps = write(
        root,
        "operators/steps.py",
        """
        from airflow.sdk import BaseOperator

        from include.connectors.aws import capability_client


        class _Step(BaseOperator):
            capability = ""

            def client(self, run):
                return capability_client(self.capability, "acme", "ec2", run_context=run)
        """,
    )
    folder = dag_folder(
        subclass='''
        """No DAG: a module subclassing a platform step (here a stand-in, so that it imports)."""
        _Step = object


        class Isolate(_Step):
            capability = "host-isolate"
        '''
    )
    ctx = CheckContext(dags_folder=folder, code_scan_roots=(root,))

    violations = run_checks(ctx, [check_capability_calls])

    subclass = folder / "subclass.py"
    assert violations == [
        Violation(
            "capability-calls",
            f"{display_path(subclass)}:{line_of(subclass, 'class Isolate')}",
            "class Isolate uses privileged capability 'host-isolate' through self.capability in _Step.client "
            f"({display_path(steps)}:{line_of(steps, 'capability_client(')}) {UNAPPROVED}",
        )
    ]


# --------------------------------------------------------------------------------------------
# capability-domain

DOMAIN_DAG = '''
"""A step of another domain's capability."""
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import TaskGroup

from include.workflows import domain_workflow


class Inspect(EmptyOperator):
    capability = "{capability}"


@domain_workflow(domain="{domain}", dag_id="inspect", doc_md=__doc__)
def inspect():
    {tasks}


inspect()
'''


@pytest.mark.parametrize(
    ("capability", "domain", "tasks", "task_id", "where"),
    [
        pytest.param(
            "host-inspect", "hr", 'Inspect(task_id="inspect_host")', "inspect_host", "line", id="line"
        ),
        pytest.param(
            "host-inspect",
            "hr",
            'with TaskGroup("contain"):\n        Inspect(task_id="inspect_host")',
            "contain.inspect_host",
            "line",
            id="in-a-task-group",
        ),
        pytest.param(
            "host-inspect",
            "hr",
            'Inspect(task_id="_".join(["inspect", "host"]))',
            "inspect_host",
            "unknown",
            id="line-unknown",
        ),
        pytest.param("host-inspect", "soc", 'Inspect(task_id="inspect_host")', None, None, id="granted"),
        pytest.param("launch-missiles", "hr", 'Inspect(task_id="inspect_host")', None, None, id="undeclared"),
    ],
)
def test_capability_domain(dag_folder, capability, domain, tasks, task_id, where):
    folder = dag_folder(inspect=DOMAIN_DAG.format(capability=capability, domain=domain, tasks=tasks))
    path = folder / "inspect.py"

    violations = run_checks(CheckContext(dags_folder=folder), [check_capability_domain])

    if task_id is None:  # an undeclared capability is approval-before-privileged's finding
        assert violations == []
        return
    line = line_of(path, "Inspect(task_id=") if where == "line" else "unknown"
    assert violations == [
        Violation(
            "capability-domain",
            f"{display_path(path)}::inspect::{task_id}",
            f"{display_path(path)} line {line}: DAG inspect task {task_id} uses capability 'host-inspect' "
            "of domains [soc], not granted to domain 'hr'",
        )
    ]


def test_capability_domain_of_a_mapped_task(dag_folder):
    tasks = 'Inspect.partial(task_id="inspect_host").expand(doc=["a", "b"])'
    folder = dag_folder(inspect=DOMAIN_DAG.format(capability="host-inspect", domain="hr", tasks=tasks))
    path = folder / "inspect.py"

    [violation] = run_checks(CheckContext(dags_folder=folder), [check_capability_domain])

    assert violation.message.startswith(
        f"{display_path(path)} line {line_of(path, 'Inspect.partial(')}: DAG inspect task inspect_host "
    )


def test_task_line_finds_a_task_decorated_function():
    tree = ast.parse('@task(task_id="named")\ndef f():\n    pass\n\n\n@task\ndef g():\n    pass\n')

    assert (task_line(tree, "named"), task_line(tree, "g"), task_line(tree, "f")) == (1, 7, None)


# --------------------------------------------------------------------------------------------
# Wiring and the real repository


@pytest.mark.parametrize(
    ("include_folder", "plugins_folder", "expected"),
    [
        pytest.param(
            "/r/include", None, (Path("/r/include"), Path("/r/plugins")), id="plugins-beside-include"
        ),
        pytest.param("", None, (), id="no-include-no-plugins"),
        pytest.param("", "/p", (Path("/p"),), id="plugins-only"),
        pytest.param("/r/include", "", (Path("/r/include"),), id="plugins-skipped"),
    ],
)
def test_code_scan_roots(include_folder, plugins_folder, expected):
    assert code_scan_roots(include_folder, plugins_folder) == expected


def test_both_rules_run_in_policy_check():
    assert {check_capability_domain, check_capability_calls} <= set(checks.RULES)
    assert code_scan_roots(str(DEFAULT_INCLUDE_FOLDER), None) == (
        DEFAULT_INCLUDE_FOLDER,
        DEFAULT_PLUGINS_FOLDER,
    )


def test_real_repository_passes_the_capability_rules():
    ctx = CheckContext(
        dags_folder=DEFAULT_DAGS_FOLDER,
        policy_file=DOMAINS_FILE,
        code_scan_roots=(DEFAULT_INCLUDE_FOLDER, DEFAULT_PLUGINS_FOLDER),
    )

    assert run_checks(ctx, [check_capability_domain, check_capability_calls]) == []


PRIVILEGED_OPERATORS = [
    "BlockIndicatorOperator",
    "DisableAccountOperator",
    "DisableEntraUserOperator",
    "DisableIdentityCenterUserOperator",
    "EnableEntraUserOperator",
    "EnsureIdentityCenterUserOperator",
    "IsolateDeviceOperator",
    "IsolateHostOperator",
    "ReleaseDeviceOperator",
    "RevokeTenantAccessKeysOperator",
    "TerraformApplyOperator",
    "UnblockIndicatorOperator",
]


def test_the_real_privileged_operators_are_caught_without_requires_approval(tmp_path):
    """The same operators with RequiresApproval taken out of every class statement: each one that
    assumes a privileged role is named (this is what the rule reported before the mixin existed)."""
    root = tmp_path / "include"
    shutil.copytree(DEFAULT_INCLUDE_FOLDER / "operators", root / "operators")
    for module in (root / "operators").glob("*.py"):
        text = module.read_text(encoding="utf-8")
        module.write_text(re.sub(r"\bRequiresApproval,\s*", "", text), encoding="utf-8")
    findings = scan(load_capabilities().capabilities, dag_files={}, code_roots=(root,))

    assert sorted({f.message.split()[1] for f in findings}) == PRIVILEGED_OPERATORS
    assert all(UNAPPROVED in f.message for f in findings)
