"""The HR steps with a mocked hook: the record's validation (and its comment on the HR ticket) and the
HR ticket itself. The identity steps are in test_identity_center.py and test_ldap.py of this folder.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest
from airflow.sdk.exceptions import AirflowFailException

from include.connectors.context import RunContext, default_correlation_id
from include.connectors.idempotency import idempotency_key
from include.connectors.ticketing.request_tracker import RequestTrackerHook
from include.operators.hr import HrTicketOperator, ValidateEmployeeOperator
from include.policies.hr_roles import role_mapping
from include.validation.employee import EmployeeRecordError

DAG_ID = "hr_onboarding"
RUN_ID = "manual__2026-12-06T10:00:00+00:00"
RECORD: dict[str, Any] = {
    "employee_id": "E01234",
    "given_name": "Ada",
    "surname": "Lovelace",
    "email": "ada.lovelace@secops.example",
    "uid": "alovelace",
    "role": "soc-analyst",
    "manager_email": "grace.hopper@secops.example",
    "start_date": "2026-12-16",
    "tenant": "",
}


def _context(task_id: str) -> dict[str, Any]:
    ti = mock.MagicMock(dag_id=DAG_ID, task_id=task_id, run_id=RUN_ID)
    return {"ti": ti, "run_id": RUN_ID, "dag_run": None}


def _validation(*, success: bool) -> mock.MagicMock:
    result = mock.MagicMock(success=success)
    result.summary.return_value = (
        "2 of 20 checks failed: email, start_date" if not success else "20 checks passed"
    )
    result.markdown.return_value = "### Employee record **failed**"
    result.as_xcom.return_value = {"success": success, "checks": 20}
    return result


@pytest.fixture
def validate() -> Iterator[mock.MagicMock]:
    with mock.patch("include.validation.employee.validate_employee_record") as validate_record:
        yield validate_record


@pytest.fixture
def validation_hook() -> Iterator[mock.MagicMock]:
    with mock.patch.object(ValidateEmployeeOperator, "hook", new_callable=mock.PropertyMock) as prop:
        yield prop.return_value


def test_a_valid_record_returns_the_result_and_the_role_mapping(
    validate: mock.MagicMock, validation_hook: mock.MagicMock
) -> None:
    validate.return_value = _validation(success=True)
    operator = ValidateEmployeeOperator(task_id="validate_record", record=RECORD, ticket_id="42")

    result = operator.execute(_context("validate_record"))

    no_tenant = {k: v for k, v in RECORD.items() if k != "tenant"}  # an empty optional field: not given
    validate.assert_called_once_with(no_tenant, onboarding=True)
    assert result == {"success": True, "checks": 20, "mapping": role_mapping("soc-analyst").as_xcom()}
    validation_hook.comment.assert_not_called()


def test_a_failed_record_goes_to_the_hr_ticket_once_per_run(
    validate: mock.MagicMock, validation_hook: mock.MagicMock
) -> None:
    validate.return_value = _validation(success=False)
    operator = ValidateEmployeeOperator(
        task_id="validate_record", record=RECORD, ticket_id="42", onboarding=False
    )

    with pytest.raises(AirflowFailException, match=r"^2 of 20 checks failed: email, start_date$"):
        operator.execute(_context("validate_record"))

    run = RunContext(DAG_ID, RUN_ID, "validate_record", "secops", default_correlation_id(DAG_ID, RUN_ID))
    validation_hook.comment.assert_called_once_with(
        "42", "### Employee record **failed**", idempotency_key=idempotency_key(run, "validation")
    )
    assert validate.call_args.kwargs == {"onboarding": False}


def test_a_failed_record_without_a_ticket_only_fails(
    validate: mock.MagicMock, validation_hook: mock.MagicMock
) -> None:
    validate.return_value = _validation(success=False)

    with pytest.raises(AirflowFailException, match="checks failed"):
        ValidateEmployeeOperator(task_id="validate_record", record=RECORD).execute(
            _context("validate_record")
        )
    validation_hook.comment.assert_not_called()


def test_something_that_is_no_record_is_refused(
    validate: mock.MagicMock, validation_hook: mock.MagicMock
) -> None:
    validate.side_effect = EmployeeRecordError("an employee record must be a mapping")

    with pytest.raises(
        AirflowFailException, match=r"^employee record refused: an employee record must be a mapping$"
    ):
        ValidateEmployeeOperator(task_id="validate_record", record=RECORD, ticket_id="42").execute(
            _context("validate_record")
        )
    validation_hook.comment.assert_not_called()


def test_the_validation_posts_to_request_tracker_of_the_staff_tenant() -> None:
    hook = ValidateEmployeeOperator(task_id="validate_record", record=RECORD).hook

    assert isinstance(hook, RequestTrackerHook)
    assert hook.tenant == "secops"
    assert "connection" not in vars(hook)


@pytest.fixture
def ticket_hook() -> Iterator[mock.MagicMock]:
    with (
        mock.patch.object(HrTicketOperator, "hook", new_callable=mock.PropertyMock) as prop,
        mock.patch("include.operators.ticketing.audit_side_effect"),
    ):
        prop.return_value.retry_count = 0
        yield prop.return_value


def _hr_ticket(existing: str) -> HrTicketOperator:
    return HrTicketOperator(
        task_id="hr_ticket",
        existing=existing,
        subject="Onboarding Ada Lovelace (E01234)",
        body="Onboarding of Ada Lovelace",
        idempotency_basis="onboarding-E01234",
    )


@pytest.mark.parametrize("existing", [pytest.param("17", id="number"), pytest.param(" 17 ", id="padded")])
def test_the_hr_ticket_given_is_used_as_it_is(ticket_hook: mock.MagicMock, existing: str) -> None:
    assert _hr_ticket(existing).execute(_context("hr_ticket")) == {
        "id": "17",
        "created": False,
        "given": True,
    }
    ticket_hook.create_ticket.assert_not_called()


@pytest.mark.parametrize(
    "existing", [pytest.param("", id="empty"), pytest.param("0", id="zero"), pytest.param("None", id="none")]
)
def test_without_a_given_ticket_one_is_opened_in_the_hr_queue(
    ticket_hook: mock.MagicMock, existing: str
) -> None:
    ticket_hook.create_ticket.return_value.as_xcom.return_value = {"id": "81", "created": True, "queue": "hr"}
    operator = _hr_ticket(existing)

    result = operator.execute(_context("hr_ticket"))

    run = RunContext(DAG_ID, RUN_ID, "hr_ticket", "secops", default_correlation_id(DAG_ID, RUN_ID))
    ticket_hook.create_ticket.assert_called_once_with(
        queue="hr",
        subject="Onboarding Ada Lovelace (E01234)",
        body="Onboarding of Ada Lovelace",
        idempotency_key=operator.key(run),
        correlation_id=run.correlation_id,
        fields={},
    )
    assert result == {
        "id": "81",
        "created": True,
        "queue": "hr",
        "correlation_id": run.correlation_id,
        "retries": 0,
        "given": False,
    }
    assert operator.tenant == "secops"
