"""HR workflow steps: the employee record, the HR ticket, and the base of every identity step.

The staff identities live in the internal tenant ``secops`` (``tenants.yaml``): IAM Identity
Center in its account (``include/operators/identity_center.py``), reached only through the
``identity-admin`` (onboarding) and ``identity-disable`` (offboarding) capability roles, and the
company directory over LDAP (``include/operators/ldap.py``). Every step is idempotent (the
connectors read first and write only the difference), so a retried task or a re-run with the same
employee converges and says ``created``/``changed`` = False. Errors that retrying cannot fix (a
conflict, a missing group, a refused record) fail the task at once with the connector's message,
which names the field.

Only ids, names of groups and flags go to XCom: no personal names, no emails (those stay in the
run's params, which HR entered).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from include.approvals.verify import RequiresApproval
from include.connectors.context import RunContext
from include.operators.failing import failing_fast
from include.operators.ticketing import CreateTicketOperator
from include.policies.tenants import STAFF_TENANT

if TYPE_CHECKING:
    from include.connectors.ticketing.interface import TicketingHook


class ValidateEmployeeOperator(BaseOperator):
    """Great Expectations on the employee record; on failure the result goes to the HR ticket.

    Nothing exists yet when this runs. A record that fails stops the run here: the validation
    result (every check, the problems in words) is posted as a comment on ``ticket_id`` when the
    request came with an HR ticket, and the task fails with the same problems. Returns the
    result and the groups of the record's role (``hr_roles.yaml``) for the approval question.

    :param record: the employee record as the form sent it (templated).
    :param ticket_id: the HR ticket to post a failed validation to; empty: none (templated).
    :param onboarding: validate for onboarding (every field) rather than offboarding.
    """

    template_fields: Sequence[str] = ("record", "ticket_id")
    ui_color = "#e8f4ff"

    def __init__(
        self, *, record: Mapping[str, Any], ticket_id: str = "", onboarding: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.record = dict(record)
        self.ticket_id = ticket_id
        self.onboarding = onboarding

    def execute(self, context: Any) -> dict[str, Any]:
        from include.policies.hr_roles import role_mapping
        from include.validation.employee import EmployeeRecordError, validate_employee_record

        # The form sends every field; an optional one left empty means "not given".
        record = {k: v for k, v in self.record.items() if not (k == "tenant" and v in ("", None))}
        try:
            result = validate_employee_record(record, onboarding=self.onboarding)
        except EmployeeRecordError as error:
            raise AirflowFailException(f"employee record refused: {error}") from None
        self.log.info("%s", result.summary())
        if not result.success:
            if self.ticket_id:
                self._post(context, result.markdown())
            raise AirflowFailException(result.summary())
        mapping = role_mapping(str(record["role"]))
        return {**result.as_xcom(), "mapping": mapping.as_xcom()}

    @cached_property
    def hook(self) -> TicketingHook:
        """The HR ticketing system (Request Tracker) of the staff tenant."""
        from include.connectors.ticketing import ticketing_hook

        return ticketing_hook("request_tracker", None, STAFF_TENANT)

    def _post(self, context: Any, body: str) -> None:
        from include.connectors.idempotency import idempotency_key

        run = RunContext.from_airflow_context(context, STAFF_TENANT)
        # Keyed by the run: a retried task posts nothing twice; a corrected record re-submitted
        # is a new run and its result is news for HR.
        key = idempotency_key(run, "validation")
        entry = self.hook.comment(str(self.ticket_id), body, idempotency_key=key)
        self.log.info("validation result posted to ticket %s (entry %s)", entry.ticket_id, entry.entry_id)


class _IdentityStep(BaseOperator):
    """Base: fields templated from the run's params; errors retrying cannot fix fail at once.

    :param user_name: the employee's login name (templated).
    """

    template_fields: Sequence[str] = ("user_name",)

    def __init__(self, *, user_name: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.user_name = user_name

    def guarded(self, step: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Run ``step`` (:func:`include.operators.failing.failing_fast`): a permanent connector error
        (Identity Center's or the directory's refusal, a conflict, a missing group) fails at once."""
        return failing_fast(self.task_id, step)


# The onboarding record as the gate binds it (``artifact_params`` of dags/hr/onboarding.py).
ONBOARDING_ARTIFACT = ("email", "employee_id", "given_name", "role", "surname", "uid")


class _OnboardingStep(RequiresApproval, _IdentityStep):
    """Privileged onboarding step: acts on the approved employee record only (``identity-admin``)."""

    capability = "identity-admin"

    def __init__(self, **kwargs: Any) -> None:
        # Airflow's operator metaclass gives a class without an __init__ of its own its parent's
        # (wrapped), which would skip the other bases of a step that combines this one with a
        # system's base (EnsureIdentityCenterUserOperator): pass on along the MRO instead.
        super().__init__(**kwargs)

    def expected_flags(self, context: Any) -> dict[str, bool]:
        from include.policies.hr_roles import role_mapping

        # A role with a privileged group needs the stricter approval, whatever the request said.
        return {"privileged": role_mapping(str(getattr(self, "role", ""))).privileged}


class HrTicketOperator(CreateTicketOperator):
    """The HR ticket of the request: the one HR gave (``existing``), or one opened in queue ``hr``
    once per employee (``idempotency_basis``).

    :param existing: the ticket HR gave; empty, ``0`` or ``None``: open one (templated).
    :param kwargs: as :class:`~include.operators.ticketing.CreateTicketOperator` (subject, body,
        idempotency_basis, ...); the tenant is the staff tenant and the queue ``hr``.
    """

    template_fields: Sequence[str] = (*CreateTicketOperator.template_fields, "existing")

    def __init__(self, *, existing: str, **kwargs: Any) -> None:
        super().__init__(tenant=STAFF_TENANT, ticket_queue="hr", **kwargs)
        self.existing = existing

    def execute(self, context: Any) -> dict[str, Any]:
        given = str(self.existing).strip()
        if given not in ("", "0", "None"):
            return {"id": given, "created": False, "given": True}
        return {**super().execute(context), "given": False}
