"""Where the source assumes a capability role: the ``capability-calls`` rule of policy-check.

``approval-before-privileged`` sees what a task *declares* (its ``capability`` class attribute). The
credentials come from the functions and hooks that take a capability name
(:data:`CAPABILITY_FUNCTIONS`): ``capability_client`` and ``capability_session``
(:mod:`include.connectors.aws`) and ``capability_environment`` (:mod:`include.connectors.terraform`)
take it as their first argument; the AWS hooks (``AwsCapabilityHook`` and one per system: ``Ec2Hook``,
``IamHook``, ``IdentityCenterHook``, ``PerimeterHook``) as their keyword ``capability=``. Called
from anywhere else, they would pass every check. This module finds the calls in the source (``ast``,
nothing is imported), by the called name: imported as a name, aliased (``import ... as``,
``from ... import ... as``) or through a module attribute.

- DAG files (every module under the DAG folder) may call them only with a literal, non-privileged
  capability granted to the DAG's domain. A privileged step belongs in its operator, behind its
  approval gate.
- Platform code (``include/``, ``plugins/``) uses a privileged capability only inside a class
  inheriting :data:`APPROVAL_MIXIN` (``include/approvals/verify.py``), which checks the approval at
  run time. ``self.capability`` in a base class is followed into every subclass (an operator's
  ``hook`` built with ``capability=self.capability``), and a method that passes its parameter on
  (``def client(self, context, capability)``) to every ``self.<method>(...)`` call of the class and
  its subclasses. The modules defining the functions and hooks are not checked: they pass their
  caller's capability on by design.

Only the modules that can matter are parsed: those whose text names a capability function (a
call, an alias, an attribute access spells the name out) and, transitively, those defining their
classes' bases and subclasses (which decide what ``self.capability`` is).
"""

from __future__ import annotations

import ast
import gc
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from include.policies.capabilities import Capability

# The capability-taking functions and hooks, each with the module that defines it (relative to the
# repo root). Every subclass of AwsCapabilityHook belongs here (a unit test checks it).
CAPABILITY_FUNCTIONS: dict[str, str] = {
    "capability_client": "include/connectors/aws.py",
    "capability_session": "include/connectors/aws.py",
    "tenant_connection": "include/connectors/aws.py",
    "capability_environment": "include/connectors/terraform.py",
    "AwsCapabilityHook": "include/connectors/aws.py",
    "Ec2Hook": "include/connectors/ec2.py",
    "IamHook": "include/connectors/iam.py",
    "IdentityCenterHook": "include/connectors/identity_center.py",
    "PerimeterHook": "include/connectors/perimeter.py",
    "GraphHook": "include/connectors/microsoft.py",
    "DefenderHook": "include/connectors/microsoft.py",
    "MicrosoftTenantHook": "include/connectors/microsoft.py",
}
DEFINING_MODULES = frozenset(CAPABILITY_FUNCTIONS.values())
# The functions take the capability first, or as ``capability=``; the hooks as ``capability=`` only
# (their first parameter is the connection id).
CAPABILITY_PARAMETER = "capability"
KEYWORD_ONLY = frozenset(
    {
        "AwsCapabilityHook",
        "Ec2Hook",
        "IamHook",
        "IdentityCenterHook",
        "PerimeterHook",
        "GraphHook",
        "DefenderHook",
        "MicrosoftTenantHook",
    }
)
APPROVAL_MIXIN = "RequiresApproval"
APPROVAL_MIXIN_MODULE = "include/approvals/verify.py"
# Tests are not the product (local-only code lives outside include/ and plugins/, in devstack/).
EXCLUDED_PARTS = frozenset({"tests", "__pycache__"})

_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef)
_FUNCTION_SCOPES = (*_DEFS, ast.Lambda)
_SCOPES = (ast.ClassDef, *_FUNCTION_SCOPES)
_Def = ast.FunctionDef | ast.AsyncFunctionDef
Scope = tuple[ast.AST, ...]  # the enclosing classes and functions of a node, outermost first
Display = Callable[[Path], str]


@dataclass(frozen=True, order=True)
class Finding:
    """One problem: the file, the line, and the sentence saying what to change."""

    path: Path
    line: int
    message: str


@dataclass(frozen=True)
class DagFile:
    """What the DagBag knows of a file under the DAG folder: its DAGs and their domain(s)."""

    dag_ids: tuple[str, ...] = ()
    domains: tuple[str, ...] = ()


@dataclass(eq=False)
class _Source:
    path: Path
    text: str
    dag_file: DagFile | None  # None: platform code

    @property
    def names_a_function(self) -> bool:
        """Whether the text names a capability function: a call, an alias, an attribute spells it."""
        return any(name in self.text for name in CAPABILITY_FUNCTIONS)


@dataclass(eq=False)
class _Module:
    path: Path
    tree: ast.Module
    dag_file: DagFile | None  # None: platform code
    names_a_function: bool  # walked for calls only then

    @classmethod
    def parse(cls, source: _Source) -> _Module:
        # Parsing makes ~10^5 small objects; in policy-check's process (Airflow and the DagBag in
        # memory) every collection they trigger walks that whole heap: twice the time, for nothing.
        collecting = gc.isenabled()
        gc.disable()
        try:
            tree = ast.parse(source.text, filename=str(source.path))
        finally:
            if collecting:
                gc.enable()
        return cls(source.path, tree, source.dag_file, source.names_a_function)

    @cached_property
    def nodes(self) -> list[tuple[ast.AST, Scope]]:
        """Every node with its enclosing classes and functions."""
        return _walk(self.tree)

    @cached_property
    def imports(self) -> tuple[dict[str, str], set[str]]:
        """Local names of capability functions (``as`` aliases included), and every name bound by an
        import, function-local imports included."""
        aliases: dict[str, str] = {}
        imported: set[str] = set()
        for node, _ in self.nodes:
            if isinstance(node, ast.Import):
                imported.update(alias.asname or alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    local = alias.asname or alias.name
                    imported.add(local)
                    if alias.name in CAPABILITY_FUNCTIONS:
                        aliases[local] = alias.name
        return aliases, imported

    @cached_property
    def top_level(self) -> tuple[set[str], dict[str, str]]:
        """Names the module binds itself, and its string constants (``NAME = "literal"``, once)."""
        assigned: dict[str, list[ast.expr]] = {}
        defined: set[str] = set()
        for statement in self.tree.body:
            if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                defined.add(statement.name)
            for target, value in _assignments(statement):
                if isinstance(target, ast.Name):
                    assigned.setdefault(target.id, []).append(value)
        constants = {
            name: values[0].value
            for name, values in assigned.items()
            if len(values) == 1 and isinstance(values[0], ast.Constant) and isinstance(values[0].value, str)
        }
        return defined | set(assigned), constants

    @property
    def is_dag_file(self) -> bool:
        return self.dag_file is not None

    def called_function(self, func: ast.expr) -> str | None:
        """The capability function ``func`` names, if it names one."""
        aliases, imported = self.imports
        if isinstance(func, ast.Name):
            if func.id in aliases:
                return aliases[func.id]
            return func.id if func.id in CAPABILITY_FUNCTIONS and func.id not in self.top_level[0] else None
        if isinstance(func, ast.Attribute) and func.attr in CAPABILITY_FUNCTIONS:
            root = _root_name(func)
            if root in imported:
                return func.attr
            # In a DAG file any ``x.capability_client`` counts (not ``self.``: a method of its own).
            if self.is_dag_file and root not in ("self", "cls"):
                return func.attr
        return None

    def literal(self, expr: ast.expr | None, scope: Scope) -> str | None:
        """The string ``expr`` always is: a literal, or a module constant not shadowed locally."""
        if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
            return expr.value
        constants = self.top_level[1]
        if isinstance(expr, ast.Name) and expr.id in constants and not _bound_locally(expr.id, scope):
            return constants[expr.id]
        return None


@dataclass(eq=False)
class _Class:
    name: str
    module: _Module
    node: ast.ClassDef
    bases: tuple[str, ...]


@dataclass(frozen=True)
class _Site:
    """Where a capability reaches a capability function: the module, the scope and the argument."""

    module: _Module
    node: ast.expr
    scope: Scope
    argument: ast.expr | None
    function: str
    via: str = ""  # how it got there, for the message (" through self.capability in ...")


def _walk(tree: ast.Module) -> list[tuple[ast.AST, Scope]]:
    nodes: list[tuple[ast.AST, Scope]] = []
    pending: list[tuple[ast.AST, Scope]] = [(tree, ())]
    while pending:
        node, scope = pending.pop()
        inner = (*scope, node) if isinstance(node, _SCOPES) else scope
        for child in ast.iter_child_nodes(node):
            nodes.append((child, inner))
            pending.append((child, inner))
    return nodes


def _alternatives(names: Iterable[str]) -> str:
    return "|".join(sorted(map(re.escape, names)))


def _class_definitions(body: list[ast.stmt]) -> Iterator[ast.ClassDef]:
    """The classes of a module, nested ones and those under ``if``/``try`` included (not in functions)."""
    for statement in body:
        if isinstance(statement, ast.ClassDef):
            yield statement
            yield from _class_definitions(statement.body)
        elif isinstance(statement, ast.If | ast.Try | ast.TryStar | ast.With):
            blocks = [statement.body, getattr(statement, "orelse", []), getattr(statement, "finalbody", [])]
            blocks += [handler.body for handler in getattr(statement, "handlers", [])]
            for block in blocks:
                yield from _class_definitions(block)


def _assignments(statement: ast.stmt) -> Iterator[tuple[ast.expr, ast.expr]]:
    if isinstance(statement, ast.Assign):
        for target in statement.targets:
            yield target, statement.value
    elif isinstance(statement, ast.AnnAssign | ast.AugAssign) and statement.value is not None:
        yield statement.target, statement.value


def _annotation_nodes(tree: ast.Module) -> set[int]:
    """The ids of every node inside a type annotation (arguments, returns, annotated assignments)."""
    roots: list[ast.expr] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.arg | ast.AnnAssign) and node.annotation is not None:
            roots.append(node.annotation)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.returns is not None:
            roots.append(node.returns)
    return {id(inner) for root in roots for inner in ast.walk(root)}


def _is_self(expr: ast.expr) -> bool:
    return isinstance(expr, ast.Name) and expr.id in ("self", "cls")


def _root_name(expr: ast.expr) -> str | None:
    while isinstance(expr, ast.Attribute):
        expr = expr.value
    return expr.id if isinstance(expr, ast.Name) else None


def _parameters(function: ast.AST) -> list[ast.arg]:
    if not isinstance(function, _FUNCTION_SCOPES):
        return []
    args = function.args
    return [*args.posonlyargs, *args.args, *args.kwonlyargs]


def _assigned_in(name: str, function: ast.AST) -> bool:
    return any(
        isinstance(node, ast.Name) and node.id == name and isinstance(node.ctx, ast.Store)
        for node in ast.walk(function)
    )


def _bound_locally(name: str, scope: Scope) -> bool:
    """A parameter or a local variable of an enclosing function shadows the module's name."""
    return any(
        any(arg.arg == name for arg in _parameters(function)) or _assigned_in(name, function)
        for function in scope
        if isinstance(function, _FUNCTION_SCOPES)
    )


def _argument(call: ast.Call, position: int | None, keyword: str) -> ast.expr | None:
    """The argument given for the parameter at ``position`` / named ``keyword``; None if unknown."""
    for given in call.keywords:
        if given.arg == keyword:
            return given.value
    if position is None:
        return None
    leading = call.args[: position + 1]
    if any(isinstance(arg, ast.Starred) for arg in leading) or len(leading) <= position:
        return None
    return leading[position]


def _base_name(base: ast.expr) -> str | None:
    if isinstance(base, ast.Subscript):  # Generic[T], Mixin[...]
        base = base.value
    if isinstance(base, ast.Attribute):
        return base.attr
    return base.id if isinstance(base, ast.Name) else None


def _is_task_decorator(decorator: ast.expr) -> bool:
    """``@task``, ``@task(...)``, ``@task.virtualenv(...)`` and the like."""
    if isinstance(decorator, ast.Call):
        decorator = decorator.func
    if isinstance(decorator, ast.Attribute):
        return decorator.attr == "task" or _root_name(decorator) == "task"
    return isinstance(decorator, ast.Name) and decorator.id == "task"


def _task_id(function: ast.FunctionDef | ast.AsyncFunctionDef) -> str | None:
    for decorator in function.decorator_list:
        if not _is_task_decorator(decorator):
            continue
        if isinstance(decorator, ast.Call):
            given = _argument(decorator, None, "task_id")
            if isinstance(given, ast.Constant) and isinstance(given.value, str):
                return given.value
        return function.name
    return None


def _innermost(scope: Scope, kinds: type | tuple[type, ...]) -> ast.AST | None:
    return next((node for node in reversed(scope) if isinstance(node, kinds)), None)


def _code_subject(scope: Scope) -> str:
    """Who calls, in platform code: the class, else the function, else the module."""
    owner = _innermost(scope, ast.ClassDef)
    if isinstance(owner, ast.ClassDef):
        return f"class {owner.name}"
    function = _innermost(scope, (ast.FunctionDef, ast.AsyncFunctionDef))
    if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
        return f"function {function.name}"
    return "the module"


def _dag_subject(dag_file: DagFile, scope: Scope) -> str:
    """Who calls, in a DAG file: the DAG(s) of the file, and the task, class or function."""
    parts = [f"DAG {', '.join(dag_file.dag_ids)}"] if dag_file.dag_ids else []
    functions = [node for node in scope if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)]
    task = next((task_id for f in reversed(functions) if (task_id := _task_id(f))), None)
    owner = _innermost(scope, ast.ClassDef)
    if task:
        parts.append(f"task {task}")
    elif isinstance(owner, ast.ClassDef):
        parts.append(f"class {owner.name}")
    elif functions:
        parts.append(f"function {functions[-1].name}")
    return " ".join(parts) or "the module"


def task_line(tree: ast.Module, task_id: str) -> int | None:
    """The line that creates task ``task_id``: a ``task_id="..."`` keyword, else its ``@task`` function.

    A task in a task group is ``group.name`` in the DAG and ``task_id="name"`` in the source.
    """
    names = (task_id, task_id.rsplit(".", 1)[-1])
    for name in dict.fromkeys(names):
        lines = [
            node.lineno
            for node in ast.walk(tree)
            if isinstance(node, ast.Call)
            and any(
                kw.arg == "task_id" and isinstance(kw.value, ast.Constant) and kw.value.value == name
                for kw in node.keywords
            )
        ]
        lines += [
            node.lineno
            for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and _task_id(node) == name
        ]
        if lines:
            return min(lines)
    return None


def domains_text(domains: Sequence[str]) -> str:
    """``[soc, implementation]``: the domains a capability is granted to, as messages show them."""
    return f"[{', '.join(domains)}]"


class CapabilityCallScan:
    """One scan of DAG files and platform code against the capability policy.

    :param capabilities: the declared capabilities (``capabilities.yaml``), by name.
    :param display: how a path is shown in a message (policy-check shows it relative to the cwd).
    """

    def __init__(self, capabilities: Mapping[str, Capability], *, display: Display = str) -> None:
        self.capabilities = dict(capabilities)
        self.display = display
        self.modules: list[_Module] = []
        self.findings: list[Finding] = []
        self._unparsed: list[_Source] = []
        self._classes: dict[str, list[_Class]] = {}
        self._by_node: dict[ast.ClassDef, _Class] = {}
        self._base_names: dict[ast.ClassDef, frozenset[str]] = {}

    # ----------------------------------------------------------------------------------------
    # Input

    def add_dag_file(self, path: Path, dag_file: DagFile) -> None:
        """A file under the DAG folder."""
        self._unparsed.append(_Source(path, path.read_text(encoding="utf-8"), dag_file))

    def add_code_root(self, root: Path) -> None:
        """Every module under ``root`` (``include/``, ``plugins/``) but tests."""
        for path in sorted(root.rglob("*.py")):
            relative = (Path(root.name) / path.relative_to(root)).as_posix()
            if (
                relative in DEFINING_MODULES
                or EXCLUDED_PARTS.intersection(Path(relative).parts)
                or path.name.startswith("test_")
            ):
                continue
            self._unparsed.append(_Source(path, path.read_text(encoding="utf-8"), None))

    def _parse_what_matters(self) -> None:
        """Parse the modules naming a capability function, then, until none is left, every module
        defining a base class or a subclass of a class parsed so far (found by its text: a class
        statement spells its bases out). The others cannot change what the rule finds."""
        wanted = [source for source in self._unparsed if source.names_a_function]
        searched: set[str] = set()
        while wanted:
            for source in wanted:
                self._unparsed.remove(source)
                self._parse(source)
            defined = set(self._classes) - searched
            bases = {base for infos in self._classes.values() for info in infos for base in info.bases}
            bases -= searched | set(self._classes)
            searched |= defined | bases
            patterns = [
                *([rf"\bclass\s+(?:{_alternatives(bases)})\b"] if bases else []),
                *([rf"\bclass\s+\w+\s*\([^)]*\b(?:{_alternatives(defined)})\b"] if defined else []),
            ]
            if not patterns:
                return
            related = re.compile("|".join(patterns))
            wanted = [source for source in self._unparsed if related.search(source.text)]

    def _parse(self, source: _Source) -> None:
        try:
            module = _Module.parse(source)
        except SyntaxError as error:
            if source.dag_file is None:  # a DAG file that does not parse is dag-imports' finding
                self.findings.append(Finding(source.path, error.lineno or 0, f"does not parse: {error.msg}"))
            return
        self.modules.append(module)
        for node in _class_definitions(module.tree.body):
            bases = tuple(name for base in node.bases if (name := _base_name(base)))
            info = _Class(node.name, module, node, bases)
            self._classes.setdefault(node.name, []).append(info)
            self._by_node[node] = info

    # ----------------------------------------------------------------------------------------
    # Output

    def run(self) -> list[Finding]:
        """Every finding, by file and line."""
        self._parse_what_matters()
        for module in self.modules:
            if not module.names_a_function:
                continue
            for site in self._sites(module):
                self.findings += (
                    self._dag_file_problems(site) if module.is_dag_file else self._code_problems(site, set())
                )
            self.findings += self._references(module)
        # Each finding once, by file and line; those of one line in the order found.
        return sorted(dict.fromkeys(self.findings), key=lambda finding: (finding.path, finding.line))

    def _sites(self, module: _Module) -> Iterator[_Site]:
        for node, scope in module.nodes:
            if isinstance(node, ast.Call) and (function := module.called_function(node.func)):
                position = None if function in KEYWORD_ONLY else 0
                argument = _argument(node, position, CAPABILITY_PARAMETER)
                yield _Site(module, node, scope, argument, function)

    def _references(self, module: _Module) -> list[Finding]:
        """A capability function used as a value (``f = capability_client``, ``partial(...)``); a
        type annotation (``def hook(self) -> Ec2Hook``) is not one."""
        called = {id(node.func) for node, _ in module.nodes if isinstance(node, ast.Call)}
        annotations = _annotation_nodes(module.tree)
        findings = []
        for node, scope in module.nodes:
            if (
                id(node) in called
                or id(node) in annotations
                or not isinstance(getattr(node, "ctx", None), ast.Load)
            ):
                continue
            if isinstance(node, ast.Name | ast.Attribute) and (function := module.called_function(node)):
                subject = _dag_subject(module.dag_file, scope) if module.dag_file else _code_subject(scope)
                message = (
                    f"{subject} uses {function} without calling it: call it directly, with a literal "
                    "capability, so the policy can check it"
                )
                findings.append(Finding(module.path, node.lineno, message))
        return findings

    # ----------------------------------------------------------------------------------------
    # DAG files

    def _dag_file_problems(self, site: _Site) -> list[Finding]:
        assert site.module.dag_file is not None
        dag_file = site.module.dag_file
        subject = _dag_subject(dag_file, site.scope)
        name = site.module.literal(site.argument, site.scope)
        if name is None:
            return [self._computed(site, subject)]
        capability = self.capabilities.get(name)
        if capability is None:
            return [self._undeclared(site, subject, name)]
        # A literal, non-privileged capability of the DAG's own domain is allowed in a DAG file (a
        # read-only inspection, a ticket): its role is least privilege and needs no approval.
        messages = []
        if capability.privileged:
            messages.append(
                f"{subject} uses privileged capability {name!r} directly, not behind an approval gate "
                "(use its operator)"
            )
        messages += [
            f"{subject} uses capability {name!r} of domains {domains_text(capability.domains)}, "
            f"not granted to domain {domain!r}"
            for domain in dag_file.domains
            if domain not in capability.domains
        ]
        return [Finding(site.module.path, site.node.lineno, message) for message in messages]

    # ----------------------------------------------------------------------------------------
    # Platform code

    def _code_problems(self, site: _Site, seen: set[int]) -> list[Finding]:
        if id(site.node) in seen:
            return []
        seen.add(id(site.node))
        owner = self._owner(site.scope)
        name = site.module.literal(site.argument, site.scope)
        if name is not None:
            return self._literal_problems(site, owner, name)
        if owner is None:
            return [self._computed(site, _code_subject(site.scope))]
        if self.approved(owner):
            return []  # RequiresApproval checks whatever the capability is at run time
        argument = site.argument
        if isinstance(argument, ast.Attribute) and _is_self(argument.value):
            return self._attribute_problems(site, owner, argument.attr)
        method = site.scope[-1]
        if (
            isinstance(argument, ast.Name)
            and isinstance(method, ast.FunctionDef | ast.AsyncFunctionDef)
            and site.scope[-2:-1] == (owner.node,)
        ):
            forwarded = self._forwarded(site, owner, method, argument.id, seen)
            if forwarded is not None:
                return forwarded
        return [self._computed(site, _code_subject(site.scope))]

    def _literal_problems(self, site: _Site, owner: _Class | None, name: str) -> list[Finding]:
        capability = self.capabilities.get(name)
        subject = _code_subject(site.scope)
        if capability is None:
            return [self._undeclared(site, subject, name)]
        if not capability.privileged or (owner is not None and self.approved(owner)):
            return []
        return [Finding(site.module.path, site.node.lineno, self._unapproved(subject, name, site.via))]

    def _attribute_problems(self, site: _Site, owner: _Class, attribute: str) -> list[Finding]:
        """``self.capability``: what it is in the class and in each subclass that runs this code."""
        runners = [owner, *self._subclasses(owner)]
        if any(_assigned_on_instances(info, attribute) for info in runners + self._ancestors(owner)):
            return [self._computed(site, _code_subject(site.scope))]
        method = site.scope[-1]
        qualified = owner.name + (f".{method.name}" if isinstance(method, _DEFS) else "")
        where = f"{self.display(site.module.path)}:{site.node.lineno}"
        via = f"{site.via} through self.{attribute} in {qualified} ({where})"
        findings = []
        for info in runners:
            if self.approved(info):
                continue
            value = self._class_attribute(info, attribute, set())
            name = value[1].literal(value[0], ()) if value else None
            if name is None:
                return [self._computed(site, _code_subject(site.scope))]
            if name == "":
                continue  # a base class's placeholder; each concrete class names its capability
            capability = self.capabilities.get(name)
            subject = f"class {info.name}"
            if capability is None:
                message = self._undeclared_message(subject, name)
            elif capability.privileged:
                message = self._unapproved(subject, name, via)
            else:
                continue
            findings.append(Finding(info.module.path, info.node.lineno, message))
        return findings

    def _forwarded(
        self, site: _Site, owner: _Class, method: _Def, parameter: str, seen: set[int]
    ) -> list[Finding] | None:
        """A method passing its parameter on: check every ``self.<method>(...)`` call in the class and
        its subclasses. None when the name is not an untouched parameter or nothing calls the method."""
        positional = [arg.arg for arg in (*method.args.posonlyargs, *method.args.args)]
        keyword_only = [arg.arg for arg in method.args.kwonlyargs]
        if parameter not in positional + keyword_only or _assigned_in(parameter, method):
            return None
        # Called bound (self.method(...)): the first positional argument given is the second parameter.
        position = positional.index(parameter) - 1 if parameter in positional else None
        via = f"{site.via} through {owner.name}.{method.name}"
        calls = [
            _Site(info.module, node, scope, _argument(node, position, parameter), method.name, via)
            for info in [owner, *self._subclasses(owner)]
            for node, scope in info.module.nodes
            if info.node in scope and isinstance(node, ast.Call) and _calls_own_method(node, method.name)
        ]
        if not calls:
            return None
        return [finding for call in calls for finding in self._code_problems(call, seen)]

    # ----------------------------------------------------------------------------------------
    # Classes, by name, over everything scanned

    def _owner(self, scope: Scope) -> _Class | None:
        node = _innermost(scope, ast.ClassDef)
        return self._by_node.get(node) if isinstance(node, ast.ClassDef) else None

    def _all_base_names(self, info: _Class) -> frozenset[str]:
        cached = self._base_names.get(info.node)
        if cached is not None:
            return cached
        self._base_names[info.node] = frozenset(info.bases)  # guards against a cycle
        names = set(info.bases)
        for base in info.bases:
            for parent in self._classes.get(base, []):
                names |= self._all_base_names(parent)
        self._base_names[info.node] = frozenset(names)
        return self._base_names[info.node]

    def approved(self, info: _Class) -> bool:
        """Whether the class inherits RequiresApproval (by name, through the classes scanned)."""
        return info.name == APPROVAL_MIXIN or APPROVAL_MIXIN in self._all_base_names(info)

    def _subclasses(self, info: _Class) -> list[_Class]:
        return [
            other
            for infos in self._classes.values()
            for other in infos
            if other is not info and info.name in self._all_base_names(other)
        ]

    def _ancestors(self, info: _Class) -> list[_Class]:
        names = self._all_base_names(info)
        return [parent for name in sorted(names) for parent in self._classes.get(name, [])]

    def _class_attribute(
        self, info: _Class, attribute: str, seen: set[int]
    ) -> tuple[ast.expr, _Module] | None:
        """The class-level value of ``attribute``: in the class, else in its bases, in order."""
        if id(info.node) in seen:
            return None
        seen.add(id(info.node))
        value = None
        for statement in info.node.body:
            for target, expr in _assignments(statement):
                if isinstance(target, ast.Name) and target.id == attribute:
                    value = expr
        if value is not None:
            return value, info.module
        for base in info.bases:
            for parent in self._classes.get(base, []):
                found = self._class_attribute(parent, attribute, seen)
                if found is not None:
                    return found
        return None

    # ----------------------------------------------------------------------------------------
    # Messages

    def _computed(self, site: _Site, subject: str) -> Finding:
        message = (
            f"{subject} calls {site.function} with a computed capability: name it literally so the "
            "policy can check it"
        )
        return Finding(site.module.path, site.node.lineno, message)

    def _undeclared_message(self, subject: str, name: str) -> str:
        declared = ", ".join(sorted(self.capabilities))
        return f"{subject} uses capability {name!r}, which is not declared (declared: {declared})"

    def _undeclared(self, site: _Site, subject: str, name: str) -> Finding:
        return Finding(site.module.path, site.node.lineno, self._undeclared_message(subject, name))

    @staticmethod
    def _unapproved(subject: str, name: str, via: str) -> str:
        if subject.startswith("class "):
            return (
                f"{subject} uses privileged capability {name!r}{via} but does not inherit "
                f"{APPROVAL_MIXIN} ({APPROVAL_MIXIN_MODULE}): nothing would check its approval when it runs"
            )
        return (
            f"{subject} uses privileged capability {name!r}{via} outside a class inheriting "
            f"{APPROVAL_MIXIN} ({APPROVAL_MIXIN_MODULE}): nothing would check its approval when it runs"
        )


def _assigned_on_instances(info: _Class, attribute: str) -> bool:
    """``self.<attribute> = ...`` anywhere in the class: its class attribute does not say what it is."""
    for node in ast.walk(info.node):
        for target, _ in _assignments(node) if isinstance(node, ast.stmt) else ():
            if isinstance(target, ast.Attribute) and target.attr == attribute and _is_self(target.value):
                return True
    return False


def _calls_own_method(call: ast.Call, method: str) -> bool:
    """``self.<method>(...)``, ``cls.<method>(...)`` or ``super().<method>(...)``."""
    func = call.func
    if not isinstance(func, ast.Attribute) or func.attr != method:
        return False
    receiver = func.value
    if isinstance(receiver, ast.Name):
        return _is_self(receiver)
    return (
        isinstance(receiver, ast.Call) and isinstance(receiver.func, ast.Name) and receiver.func.id == "super"
    )


def scan(
    capabilities: Mapping[str, Capability],
    *,
    dag_files: Mapping[Path, DagFile] | None = None,
    code_roots: Iterable[Path] = (),
    display: Display = str,
) -> list[Finding]:
    """Every finding of the DAG files and the platform code under ``code_roots``."""
    checker = CapabilityCallScan(capabilities, display=display)
    for path, dag_file in sorted((dag_files or {}).items()):
        checker.add_dag_file(path, dag_file)
    for root in code_roots:
        checker.add_code_root(root)
    return checker.run()
