"""The milestone invoice steps with a mocked Business Central hook (and a mocked S3): the exact ERP
call each step makes, its XCom, and how each failure ends (fail at once with the reason, retried,
or deferred).

Offline; the validation step runs the real Great Expectations suite. The ERP itself is tested in
tests/integration/connectors/test_business_central.py, the whole workflow in
tests/e2e/test_invoicing_milestone.py.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from unittest import mock

import pytest
from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException, TaskDeferred
from botocore.exceptions import ClientError

from include.approvals.verify import ApprovalVerificationError, VerifiedApproval
from include.connectors.context import RunContext, default_correlation_id
from include.connectors.erp.business_central import (
    Customer,
    Invoice,
    InvoiceResult,
    InvoiceTotals,
    PostResult,
)
from include.connectors.errors import PermanentError, RateLimitBackpressure, RetryBudgetExhausted
from include.connectors.idempotency import idempotency_key
from include.invoicing import archive
from include.invoicing.messages import failure_comment, outcome_comment
from include.invoicing.milestone import ExportLocation, MilestoneRequest
from include.operators.invoicing import (
    ArchiveInvoiceOperator,
    CheckMilestoneRequestOperator,
    CreateInvoiceOperator,
    InvoiceFailureCommentOperator,
    InvoiceOutcomeCommentOperator,
    PostInvoiceOperator,
    ValidateMilestoneLinesOperator,
)

DAG_ID = "invoicing_milestone_invoice"
RUN_ID = "manual__2026-11-02T09:00:00+00:00"
PARAMS = {
    "tenant": "acme",
    "contract_id": "CT-2026-001",
    "milestone_id": "M1",
    "period_start": "2026-10-01",
    "period_end": "2026-10-31",
    "export_key": "exports/acme/CT-2026-001/M1.csv",
}
REQUEST = MilestoneRequest.from_params(PARAMS)
REFERENCE = "ACME/CT-2026-001/M1"
LOCATION = ExportLocation("psa-exports", PARAMS["export_key"], "aws_default", None)
EXPORT_URI = "s3://psa-exports/exports/acme/CT-2026-001/M1.csv"
BODY = (
    b"line_id,customer_id,project,date,description,quantity,unit_price,currency,vat_rate\n"
    b"L-1,acme,P-1,2026-10-02,SOC monitoring,1,100.00,EUR,0.19\n"
    b"L-2,acme,P-1,2026-10-03,Incident response,2,50.00,EUR,0.19\n"
)
SHA = hashlib.sha256(BODY).hexdigest()
OTHER_SHA = "0" * 64
INVOICE_ID = "0f8fad5b-d9cb-469f-a165-70867728950e"
AUDIT_BUCKET = "orchestrator-audit"
UNTIL = datetime(2036, 11, 2, tzinfo=UTC)
APPROVED_TOTALS = {
    "currency": "EUR",
    "net": "200.00",
    "vat": "38.00",
    "gross": "238.00",
    "lines": 2,
    "by_vat_rate": {"0.19": {"net": "200.00", "vat": "38.00"}},
    "line_vat": "38.00",
}
ERP_TOTALS = InvoiceTotals("EUR", Decimal("200.00"), Decimal("38.00"), Decimal("238.00"))
VALIDATION_ARCHIVE = {
    "key": "invoices/acme/CT-2026-001/M1/validation.json",
    "sha256": "cd" * 32,
    "written": True,
    "version_id": "v0",
    "retain_until": UNTIL.isoformat(),
}
VALIDATED = {
    "export_uri": EXPORT_URI,
    "export_sha256": SHA,
    "totals": APPROVED_TOTALS,
    "validation_archive": VALIDATION_ARCHIVE,
}
ACME = Customer(id="c-1", number="10000", name="ACME Corp", blocked="")


def exactly(message: str) -> str:
    return f"^{re.escape(message)}$"


def _context(task_id: str, xcoms: dict[tuple[str, str], Any] | None = None, **params: Any) -> dict[str, Any]:
    """A task's context; ``ti.xcom_pull`` answers from ``xcoms`` by (task id, key)."""
    pushed = dict(xcoms or {})
    ti = mock.MagicMock(dag_id=DAG_ID, task_id=task_id, run_id=RUN_ID)
    ti.xcom_pull.side_effect = lambda task_ids, key="return_value": pushed.get((task_ids, key))
    return {
        "ti": ti,
        "params": {**PARAMS, **params},
        "run_id": RUN_ID,
        "dag_run": None,
        "task": mock.MagicMock(task_id=task_id),
    }


def _failure_pushed(context: dict[str, Any], step: str, message: str) -> None:
    context["ti"].xcom_push.assert_called_once_with(key="failure", value={"step": step, "message": message})


def _patch_hook(operator: type) -> Any:
    return mock.patch.object(operator, "hook", new_callable=mock.PropertyMock)


def _erp_hook(prop: mock.PropertyMock) -> mock.MagicMock:
    hook = prop.return_value
    hook.system = "business_central"
    hook.retry_count = 0
    return hook


@pytest.fixture
def s3() -> Iterator[mock.MagicMock]:
    """The PSA export bucket, holding ``BODY``."""
    client = mock.MagicMock(name="psa_s3")
    client.head_object.return_value = {"ContentLength": len(BODY), "VersionId": "v7", "ETag": '"e1"'}
    client.get_object.side_effect = lambda **kwargs: {"Body": io.BytesIO(BODY)}
    with (
        mock.patch.object(ExportLocation, "from_connection", return_value=LOCATION) as location,
        mock.patch.object(ExportLocation, "s3", return_value=client),
    ):
        yield client
    assert all(call == mock.call(PARAMS["export_key"]) for call in location.call_args_list)


@pytest.fixture
def archive_s3() -> Iterator[mock.MagicMock]:
    """The Object Lock audit bucket; ``put_object`` writes (no object there yet)."""
    client = mock.MagicMock(name="audit_s3")
    client.put_object.return_value = {"VersionId": "v1"}
    target = archive.ArchiveTarget(AUDIT_BUCKET, "eu-west-1", "aws_default", 3653)
    with (
        mock.patch.object(archive.ArchiveTarget, "from_audit_connection", return_value=target),
        mock.patch.object(archive.ArchiveTarget, "s3", return_value=client),
        mock.patch.object(archive, "retain_until", return_value=UNTIL),
    ):
        yield client


@pytest.fixture
def audit() -> Iterator[mock.MagicMock]:
    with mock.patch("include.operators.invoicing.audit_side_effect") as side_effect:
        yield side_effect


def _approved(step: Any, artifact: str | None = SHA) -> Any:
    step.approval = VerifiedApproval("invoice-post", artifact, destructive=False, privileged=True)
    return step


# --- check_request -------------------------------------------------------------------------------


def test_check_returns_the_request_and_the_exports_head(s3: mock.MagicMock) -> None:
    result = CheckMilestoneRequestOperator(task_id="check_request").execute(_context("check_request"))

    s3.head_object.assert_called_once_with(Bucket="psa-exports", Key=PARAMS["export_key"])
    assert result == {
        **REQUEST.as_xcom(),
        "export": {"uri": EXPORT_URI, "size": len(BODY), "version_id": "v7", "etag": "e1"},
    }


def test_check_refuses_a_bad_request_before_looking_for_the_export(s3: mock.MagicMock) -> None:
    context = _context("check_request", milestone_id=None)
    message = "the invoice request is refused: missing: milestone_id"
    with pytest.raises(AirflowFailException, match=exactly(message)):
        CheckMilestoneRequestOperator(task_id="check_request").execute(context)
    _failure_pushed(context, "check_request", message)
    s3.head_object.assert_not_called()


def test_check_fails_at_once_when_the_export_does_not_exist(s3: mock.MagicMock) -> None:
    s3.head_object.side_effect = ClientError({"Error": {"Code": "404"}}, "HeadObject")
    context = _context("check_request")
    message = (
        f"the PSA export {EXPORT_URI} does not exist; check export_key (the PSA writes its exports to "
        "bucket psa-exports)"
    )
    with pytest.raises(AirflowFailException, match=exactly(f"check_request: {message}")):
        CheckMilestoneRequestOperator(task_id="check_request").execute(context)
    _failure_pushed(context, "check_request", message)


# --- validate_lines --------------------------------------------------------------------------------


def test_validate_checks_the_customer_and_the_reference_then_returns_the_approval_text(
    s3: mock.MagicMock, archive_s3: mock.MagicMock, audit: mock.MagicMock
) -> None:
    context = _context("validate_lines")
    with _patch_hook(ValidateMilestoneLinesOperator) as prop:
        hook = _erp_hook(prop)
        hook.get_customer.return_value = ACME
        hook.get_invoice_by_reference.return_value = None
        result = ValidateMilestoneLinesOperator(task_id="validate_lines").execute(context)

    assert hook.method_calls == [
        mock.call.get_customer("10000"),
        mock.call.get_invoice_by_reference(REFERENCE),
    ]
    s3.get_object.assert_called_once_with(Bucket="psa-exports", Key=PARAMS["export_key"])
    key = archive.validation_key(REQUEST.archive_prefix, SHA, archive.suite_sha256())
    assert archive_s3.put_object.call_args.kwargs["Key"] == key
    approval = result.pop("approval_markdown")
    assert result == {
        "export_uri": EXPORT_URI,
        "export_sha256": SHA,
        "line_count": 2,
        "totals": APPROVED_TOTALS,
        "gross": "EUR 238.00",
        "customer": {"number": "10000", "name": "ACME Corp"},
        "existing": None,
        "validation_archive": {
            "key": key,
            "sha256": hashlib.sha256(archive_s3.put_object.call_args.kwargs["Body"]).hexdigest(),
            "written": True,
            "version_id": "v1",
            "retain_until": UNTIL.isoformat(),
        },
        "archive_key": "invoices/acme/CT-2026-001/M1/invoice.json",
    }
    assert "**EUR 238.00** gross, 2 lines." in approval
    assert f"SHA-256 `{SHA}`" in approval
    assert audit.call_args.kwargs["operation"] == "archive_validation"
    assert audit.call_args.kwargs["passed"] is True
    context["ti"].xcom_push.assert_not_called()


def test_validate_names_an_existing_draft_for_the_approver(
    s3: mock.MagicMock, archive_s3: mock.MagicMock, audit: mock.MagicMock
) -> None:
    draft = Invoice(INVOICE_ID, "D-7", REFERENCE, "10000", "Draft", "2026-11-02", ERP_TOTALS)
    with _patch_hook(ValidateMilestoneLinesOperator) as prop:
        hook = _erp_hook(prop)
        hook.get_customer.return_value = ACME
        hook.get_invoice_by_reference.return_value = draft
        result = ValidateMilestoneLinesOperator(task_id="validate_lines").execute(_context("validate_lines"))
    assert result["existing"] == {"number": "D-7", "status": "Draft"}
    assert "draft D-7 exists" in result["approval_markdown"]


@pytest.mark.parametrize(
    ("customer", "problem"),
    [
        pytest.param(
            None,
            "customer 10000 (tenant acme) does not exist in Business Central; correct the number in "
            "include/policies/invoicing.yaml",
            id="unknown-customer",
        ),
        pytest.param(
            replace(ACME, blocked="Invoice"),
            "customer 10000 (ACME Corp) is blocked in Business Central ('Invoice'): no invoice can be posted "
            "for it until finance unblocks it",
            id="blocked-customer",
        ),
    ],
)
def test_validate_stops_on_a_customer_the_erp_cannot_invoice(
    s3: mock.MagicMock,
    archive_s3: mock.MagicMock,
    audit: mock.MagicMock,
    customer: Customer | None,
    problem: str,
) -> None:
    context = _context("validate_lines")
    with _patch_hook(ValidateMilestoneLinesOperator) as prop:
        hook = _erp_hook(prop)
        hook.get_customer.return_value = customer
        with pytest.raises(
            AirflowFailException,
            match=exactly(
                f"1 problem(s) in the billable lines of {EXPORT_URI}, nothing created in Business Central; "
                f"first: {problem}"
            ),
        ):
            ValidateMilestoneLinesOperator(task_id="validate_lines").execute(context)

    assert hook.method_calls == [mock.call.get_customer("10000")]
    archive_s3.put_object.assert_called_once()  # the failed validation is archived too
    pushed = {c.kwargs["key"]: c.kwargs["value"] for c in context["ti"].xcom_push.call_args_list}
    assert pushed["problems"]["problems"] == [problem]
    assert pushed["problems"]["export_sha256"] == SHA
    assert pushed["problems"]["comment"].startswith(
        "The billable lines of milestone M1 (contract CT-2026-001, tenant acme) cannot be invoiced: "
        "1 problem in 2 lines of"
    )
    assert pushed["failure"]["step"] == "validate_lines"


def test_validate_never_asks_the_erp_about_invalid_lines(
    s3: mock.MagicMock, archive_s3: mock.MagicMock, audit: mock.MagicMock
) -> None:
    s3.get_object.side_effect = lambda **kwargs: {
        "Body": io.BytesIO(BODY.replace(b"50.00,EUR,0.19", b"50.00,EUR,0.25"))
    }
    with _patch_hook(ValidateMilestoneLinesOperator) as prop:
        hook = _erp_hook(prop)
        with pytest.raises(AirflowFailException, match=r"first: line L-2 has VAT rate 0\.25 \(allowed: "):
            ValidateMilestoneLinesOperator(task_id="validate_lines").execute(_context("validate_lines"))
    assert hook.method_calls == []
    assert audit.call_args.kwargs["passed"] is False


def test_validate_defers_when_the_erp_rate_limit_would_hold_it(
    s3: mock.MagicMock, archive_s3: mock.MagicMock, audit: mock.MagicMock
) -> None:
    context = _context("validate_lines")
    with _patch_hook(ValidateMilestoneLinesOperator) as prop:
        _erp_hook(prop).get_customer.side_effect = RateLimitBackpressure(
            "bucket full", system="business_central", operation="find_customer", wait_seconds=7.5
        )
        before = datetime.now(UTC)
        with pytest.raises(TaskDeferred) as deferred:
            ValidateMilestoneLinesOperator(task_id="validate_lines").execute(context)
    trigger = deferred.value.trigger
    assert isinstance(trigger, TimeDeltaTrigger)
    assert (
        before + timedelta(seconds=7.5)
        <= trigger.serialize()[1]["moment"]
        <= datetime.now(UTC) + timedelta(seconds=7.5)
    )
    assert deferred.value.method_name == "execute_complete"
    context["ti"].xcom_push.assert_not_called()


# --- create_invoice ------------------------------------------------------------------------------


def _create_context(validated: dict[str, Any] | None = None) -> dict[str, Any]:
    return _context("create_invoice", {("validate_lines", "return_value"): validated or VALIDATED})


def test_create_makes_the_draft_from_exactly_the_approved_export(
    s3: mock.MagicMock, audit: mock.MagicMock
) -> None:
    created = InvoiceResult(INVOICE_ID, "D-7", True, ERP_TOTALS, "Draft", lines_created=2, lines_total=2)
    context = _create_context()
    with _patch_hook(CreateInvoiceOperator) as prop:
        hook = _erp_hook(prop)
        hook.create_invoice.return_value = created
        hook.retry_count = 2
        step = _approved(CreateInvoiceOperator(task_id="create_invoice", validate_task_id="validate_lines"))
        result = step.act(context)

    hook.create_invoice.assert_called_once_with(
        "10000",
        REFERENCE,
        [
            {
                "line_id": "L-1",
                "description": "SOC monitoring",
                "quantity": "1",
                "unit_price": "100.00",
                "vat_rate": "0.19",
            },
            {
                "line_id": "L-2",
                "description": "Incident response",
                "quantity": "2",
                "unit_price": "50.00",
                "vat_rate": "0.19",
            },
        ],
        "EUR",
        datetime.now(UTC).date(),
    )
    assert result == {**created.as_dict(), "export_sha256": SHA, "retries": 2}
    audit.assert_called_once_with(
        context,
        system="business_central",
        operation="create_invoice",
        object_id=REFERENCE,
        tenant="acme",
        created=True,
        capability="invoice-post",
        invoice_id=INVOICE_ID,
        number="D-7",
        customer_number="10000",
        lines_created=2,
        lines_total=2,
        totals=ERP_TOTALS.as_dict(),
        export_sha256=SHA,
    )


@pytest.mark.parametrize(
    ("validated", "artifact", "message"),
    [
        pytest.param(
            VALIDATED,
            OTHER_SHA,
            f"create_invoice: the controller approved export {OTHER_SHA[:12]}..., but the validation step's "
            f"record names {SHA[:12]}...: nothing done",
            id="another-export-approved",
        ),
        pytest.param(
            {**VALIDATED, "export_sha256": OTHER_SHA},
            OTHER_SHA,
            f"create_invoice: the PSA export {EXPORT_URI} changed since it was validated and approved "
            f"(SHA-256 {SHA[:12]}..., approved {OTHER_SHA[:12]}...); nothing is invoiced from a file "
            "nobody approved: start the workflow again to validate and approve the new export",
            id="export-replaced",
        ),
        pytest.param(
            VALIDATED, None, "create_invoice: no verified approval of an export", id="no-approved-artifact"
        ),
    ],
)
def test_create_refuses_anything_but_the_approved_export(
    s3: mock.MagicMock, audit: mock.MagicMock, validated: dict[str, Any], artifact: str | None, message: str
) -> None:
    context = _create_context(validated)
    with _patch_hook(CreateInvoiceOperator) as prop:
        hook = _erp_hook(prop)
        step = _approved(
            CreateInvoiceOperator(task_id="create_invoice", validate_task_id="validate_lines"), artifact
        )
        with pytest.raises(AirflowFailException, match=exactly(message)):
            step.act(context)
    assert hook.method_calls == []
    audit.assert_not_called()
    # The step's own refusal already names the step; a refusal from below gets it prepended.
    pushed = message if artifact is None else message.removeprefix("create_invoice: ")
    _failure_pushed(context, "create_invoice", pushed)


def test_create_fails_at_once_when_business_central_refuses(
    s3: mock.MagicMock, audit: mock.MagicMock
) -> None:
    refusal = PermanentError(
        "POST salesInvoices -> HTTP 400: BadRequest: Customer 10000 is blocked",
        system="business_central",
        operation="create_invoice",
        status=400,
    )
    context = _create_context()
    with _patch_hook(CreateInvoiceOperator) as prop:
        _erp_hook(prop).create_invoice.side_effect = refusal
        step = _approved(CreateInvoiceOperator(task_id="create_invoice", validate_task_id="validate_lines"))
        with pytest.raises(AirflowFailException, match=exactly(f"create_invoice: {refusal}")):
            step.act(context)
    _failure_pushed(context, "create_invoice", str(refusal))
    audit.assert_not_called()


def test_create_leaves_an_exhausted_retry_budget_to_airflows_retries(
    s3: mock.MagicMock, audit: mock.MagicMock
) -> None:
    exhausted = RetryBudgetExhausted(
        "gave up after 5 attempts", system="business_central", operation="create_invoice", attempts=5
    )
    context = _create_context()
    with _patch_hook(CreateInvoiceOperator) as prop:
        _erp_hook(prop).create_invoice.side_effect = exhausted
        step = _approved(CreateInvoiceOperator(task_id="create_invoice", validate_task_id="validate_lines"))
        with pytest.raises(RetryBudgetExhausted) as raised:
            step.act(context)
    assert raised.value is exhausted  # not turned into a failure: Airflow retries the step
    _failure_pushed(context, "create_invoice", str(exhausted))


def test_create_verifies_the_invoice_post_approval_first(s3: mock.MagicMock, audit: mock.MagicMock) -> None:
    context = _create_context()
    refused = ApprovalVerificationError("create_invoice: refused to act: no approval of invoice-post")
    with (
        _patch_hook(CreateInvoiceOperator) as prop,
        mock.patch("include.approvals.verify.verify_approval", side_effect=refused) as verify,
    ):
        hook = _erp_hook(prop)
        step = CreateInvoiceOperator(
            task_id="create_invoice", validate_task_id="validate_lines", tenant="acme"
        )
        with pytest.raises(ApprovalVerificationError, match="no approval of invoice-post"):
            step.execute(context)
    verify.assert_called_once_with(context, "invoice-post", artifact=None, tenant="acme")
    assert hook.method_calls == []
    _failure_pushed(context, "create_invoice", "create_invoice: refused to act: no approval of invoice-post")


# --- post_invoice --------------------------------------------------------------------------------


def _post_context(draft_export: str = SHA) -> dict[str, Any]:
    draft = {"id": INVOICE_ID, "number": "D-7", "export_sha256": draft_export}
    return _context(
        "post_invoice",
        {("validate_lines", "return_value"): VALIDATED, ("create_invoice", "return_value"): draft},
    )


def _post_step() -> PostInvoiceOperator:
    step = PostInvoiceOperator(
        task_id="post_invoice", validate_task_id="validate_lines", create_task_id="create_invoice"
    )
    return _approved(step)


@pytest.mark.parametrize("posted", [pytest.param(True, id="posted"), pytest.param(False, id="posted-before")])
def test_post_posts_the_draft_within_the_approved_totals(audit: mock.MagicMock, posted: bool) -> None:
    result = PostResult(INVOICE_ID, "103001", "Open", posted, ERP_TOTALS)
    context = _post_context()
    with _patch_hook(PostInvoiceOperator) as prop:
        hook = _erp_hook(prop)
        hook.post_invoice.return_value = result
        assert _post_step().act(context) == {**result.as_dict(), "retries": 0}

    hook.post_invoice.assert_called_once_with(
        INVOICE_ID, expected_totals=APPROVED_TOTALS, tolerance=Decimal("0.01")
    )
    audit.assert_called_once_with(
        context,
        system="business_central",
        operation="post_invoice",
        object_id=REFERENCE,
        tenant="acme",
        created=posted,
        capability="invoice-post",
        invoice_id=INVOICE_ID,
        number="103001",
        status="Open",
        totals=ERP_TOTALS.as_dict(),
    )


def test_post_refuses_a_draft_made_from_another_export(audit: mock.MagicMock) -> None:
    context = _post_context(draft_export=OTHER_SHA)
    message = (
        f"post_invoice: the draft was made from export {OTHER_SHA[:12]}..., not the approved {SHA[:12]}...: "
        "not posted"
    )
    with _patch_hook(PostInvoiceOperator) as prop:
        hook = _erp_hook(prop)
        with pytest.raises(AirflowFailException, match=exactly(message)):
            _post_step().act(context)
    assert hook.method_calls == []
    _failure_pushed(context, "post_invoice", message)


def test_post_fails_at_once_when_the_draft_differs_from_the_approved_totals(audit: mock.MagicMock) -> None:
    differs = PermanentError(
        "draft D-7 differs from the approved totals beyond 0.01: gross 240.00 (approved 238.00); not posted",
        system="business_central",
        operation="post_invoice",
    )
    context = _post_context()
    with _patch_hook(PostInvoiceOperator) as prop:
        _erp_hook(prop).post_invoice.side_effect = differs
        with pytest.raises(AirflowFailException, match=exactly(f"post_invoice: {differs}")):
            _post_step().act(context)
    audit.assert_not_called()


def test_post_fails_without_the_create_steps_record(audit: mock.MagicMock) -> None:
    context = _context("post_invoice", {("validate_lines", "return_value"): VALIDATED})
    with _patch_hook(PostInvoiceOperator) as prop:
        hook = _erp_hook(prop)
        with pytest.raises(
            AirflowFailException, match=exactly("no result from step create_invoice (key return_value)")
        ):
            _post_step().act(context)
    assert hook.method_calls == []


# --- archive_invoice -----------------------------------------------------------------------------


def _archive_context() -> dict[str, Any]:
    return _context(
        "archive_invoice",
        {
            ("validate_lines", "return_value"): VALIDATED,
            ("post_invoice", "return_value"): {"id": INVOICE_ID, "number": "103001"},
        },
    )


def _archive_step() -> ArchiveInvoiceOperator:
    return ArchiveInvoiceOperator(
        task_id="archive_invoice", validate_task_id="validate_lines", post_task_id="post_invoice"
    )


def test_archive_writes_the_posted_invoice_as_business_central_holds_it(
    archive_s3: mock.MagicMock, audit: mock.MagicMock
) -> None:
    invoice = Invoice(INVOICE_ID, "103001", REFERENCE, "10000", "Open", "2026-11-02", ERP_TOTALS)
    lines = [
        {"description": "[L-1] SOC monitoring", "quantity": Decimal("1"), "unitPrice": Decimal("100.00")}
    ]
    with _patch_hook(ArchiveInvoiceOperator) as prop:
        hook = _erp_hook(prop)
        hook.get_invoice.return_value = invoice
        hook.get_invoice_lines.return_value = lines
        result = _archive_step().execute(_archive_context())

    assert hook.method_calls == [mock.call.get_invoice(INVOICE_ID), mock.call.get_invoice_lines(INVOICE_ID)]
    document = archive.invoice_document(
        REQUEST.as_xcom(),
        invoice,
        lines,
        approved_totals=APPROVED_TOTALS,
        export_uri=EXPORT_URI,
        export_sha256=SHA,
        validation=VALIDATION_ARCHIVE["key"],
    )
    body = archive.document_bytes(document)
    archive_s3.put_object.assert_called_once_with(
        Bucket=AUDIT_BUCKET,
        Key="invoices/acme/CT-2026-001/M1/invoice.json",
        Body=body,
        ContentType="application/json",
        IfNoneMatch="*",
        ObjectLockMode="COMPLIANCE",
        ObjectLockRetainUntilDate=UNTIL,
    )
    stored = {
        "key": "invoices/acme/CT-2026-001/M1/invoice.json",
        "sha256": hashlib.sha256(body).hexdigest(),
        "written": True,
        "version_id": "v1",
        "retain_until": UNTIL.isoformat(),
    }
    assert result == {
        "bucket": AUDIT_BUCKET,
        "retain_until": UNTIL.isoformat(),
        "objects": [VALIDATION_ARCHIVE, stored],
    }
    assert audit.call_args.kwargs["operation"] == "archive_invoice"
    assert audit.call_args.kwargs["number"] == "103001"


STILL_A_DRAFT = "invoice D-7 is still a draft; only posted invoices are archived"


def test_archive_refuses_a_draft(archive_s3: mock.MagicMock, audit: mock.MagicMock) -> None:
    draft = Invoice(INVOICE_ID, "D-7", REFERENCE, "10000", "Draft", "2026-11-02", ERP_TOTALS)
    context = _archive_context()
    with _patch_hook(ArchiveInvoiceOperator) as prop:
        hook = _erp_hook(prop)
        hook.get_invoice.return_value = draft
        with pytest.raises(
            AirflowFailException,
            match=exactly(STILL_A_DRAFT),
        ):
            _archive_step().execute(context)
    assert hook.method_calls == [mock.call.get_invoice(INVOICE_ID)]
    archive_s3.put_object.assert_not_called()
    _failure_pushed(context, "archive_invoice", STILL_A_DRAFT)


def test_archive_fails_when_the_archived_copy_differs(
    archive_s3: mock.MagicMock, audit: mock.MagicMock
) -> None:
    invoice = Invoice(INVOICE_ID, "103001", REFERENCE, "10000", "Open", "2026-11-02", ERP_TOTALS)
    archive_s3.put_object.side_effect = ClientError({"Error": {"Code": "PreconditionFailed"}}, "PutObject")
    archive_s3.get_object.return_value = {"Body": io.BytesIO(b"{}\n")}
    with _patch_hook(ArchiveInvoiceOperator) as prop:
        hook = _erp_hook(prop)
        hook.get_invoice.return_value = invoice
        hook.get_invoice_lines.return_value = []
        with pytest.raises(
            AirflowFailException,
            match=r"^archive_invoice: s3://orchestrator-audit/invoices/acme/CT-2026-001/M1/"
            r"invoice\.json already holds a different document",
        ):
            _archive_step().execute(_archive_context())
    audit.assert_not_called()


# --- the ticket comments -------------------------------------------------------------------------


def _entry(ticket_id: str = "RT-1") -> mock.MagicMock:
    return mock.MagicMock(ticket_id=ticket_id, entry_id="E-9", created=True)


def _key(task_id: str, basis: str) -> str:
    run = RunContext(DAG_ID, RUN_ID, task_id, "acme", default_correlation_id(DAG_ID, RUN_ID))
    return idempotency_key(replace(run, run_id=f"basis:{basis}"), "comment")


def _outcome_step() -> InvoiceOutcomeCommentOperator:
    return InvoiceOutcomeCommentOperator(
        task_id="report",
        tenant="acme",
        ticket_id="RT-1",
        request_task_id="check_request",
        gate_task_id="approve_invoice_post",
        create_task_id="create_invoice",
        post_task_id="post_invoice",
        archive_task_id="archive_invoice",
    )


@pytest.fixture
def ticket_audit() -> Iterator[mock.MagicMock]:
    with mock.patch("include.operators.ticketing.audit_side_effect") as side_effect:
        yield side_effect


def test_outcome_comment_of_a_posted_invoice_is_one_per_invoice(ticket_audit: mock.MagicMock) -> None:
    approval = {"outcome": "approved", "responded_by": {"name": "fiona"}, "comment": None}
    created = {"created": True, "lines_total": 2}
    posted = {"number": "103001", "totals": ERP_TOTALS.as_dict()}
    archived = {
        "bucket": AUDIT_BUCKET,
        "retain_until": UNTIL.isoformat(),
        "objects": [VALIDATION_ARCHIVE, {"key": "invoices/acme/CT-2026-001/M1/invoice.json"}],
    }
    context = _context(
        "report",
        {
            ("check_request", "return_value"): REQUEST.as_xcom(),
            ("approve_invoice_post", "approval"): approval,
            ("create_invoice", "return_value"): created,
            ("post_invoice", "return_value"): posted,
            ("archive_invoice", "return_value"): archived,
        },
    )
    with _patch_hook(InvoiceOutcomeCommentOperator) as prop:
        prop.return_value.comment.return_value = _entry()
        prop.return_value.retry_count = 0
        result = _outcome_step().execute(context)

    body = outcome_comment(
        REQUEST.as_xcom(), approval=approval, created=created, posted=posted, archived=archived
    )
    assert body.startswith("Invoice 103001 is posted in Business Central for customer 10000")
    prop.return_value.comment.assert_called_once_with(
        "RT-1", body, idempotency_key=_key("report", f"{REFERENCE}:posted")
    )
    assert result == {
        "ticket_id": "RT-1",
        "entry_id": "E-9",
        "created": True,
        "correlation_id": default_correlation_id(DAG_ID, RUN_ID),
        "retries": 0,
    }


def test_outcome_comment_of_a_rejection_is_one_per_run(ticket_audit: mock.MagicMock) -> None:
    approval = {"outcome": "rejected", "responded_by": {"name": "fiona"}, "comment": "wrong rate"}
    context = _context(
        "report",
        {
            ("check_request", "return_value"): REQUEST.as_xcom(),
            ("approve_invoice_post", "approval"): approval,
        },
    )
    with _patch_hook(InvoiceOutcomeCommentOperator) as prop:
        prop.return_value.comment.return_value = _entry()
        _outcome_step().execute(context)
    prop.return_value.comment.assert_called_once_with(
        "RT-1",
        f'Invoice {REFERENCE} was not posted: fiona rejected it ("wrong rate"). Nothing was created in '
        "Business Central by this run.",
        idempotency_key=_key("report", f"{REFERENCE}:not-posted:{RUN_ID}"),
    )


def _failure_step(ticket_id: str = "RT-1") -> InvoiceFailureCommentOperator:
    return InvoiceFailureCommentOperator(
        task_id="report_failure",
        tenant="acme",
        ticket_id=ticket_id,
        request_task_id="check_request",
        validate_task_id="validate_lines",
        step_task_ids=["validate_lines", "create_invoice", "post_invoice", "archive_invoice"],
    )


def test_failure_comment_runs_when_a_step_failed() -> None:
    assert _failure_step().trigger_rule == "one_failed"


def test_failure_comment_posts_the_validation_problems_once_per_export(ticket_audit: mock.MagicMock) -> None:
    problems = {"problems": ["line L-2 ..."], "export_sha256": SHA, "comment": "The billable lines ..."}
    context = _context(
        "report_failure",
        {("check_request", "return_value"): REQUEST.as_xcom(), ("validate_lines", "problems"): problems},
    )
    with _patch_hook(InvoiceFailureCommentOperator) as prop:
        prop.return_value.comment.return_value = _entry()
        _failure_step().execute(context)
    prop.return_value.comment.assert_called_once_with(
        "RT-1",
        "The billable lines ...",
        idempotency_key=_key("report_failure", f"{REFERENCE}:problems:{SHA}"),
    )


@pytest.mark.parametrize(
    ("failures", "step", "message"),
    [
        pytest.param(
            {("post_invoice", "failure"): {"step": "post_invoice", "message": "totals differ"}},
            "post_invoice",
            "totals differ",
            id="failed-step",
        ),
        pytest.param({}, "unknown", "see the run's task logs", id="no-reason"),
    ],
)
def test_failure_comment_names_the_step_and_its_reason(
    ticket_audit: mock.MagicMock, failures: dict[tuple[str, str], Any], step: str, message: str
) -> None:
    context = _context("report_failure", {("check_request", "return_value"): REQUEST.as_xcom(), **failures})
    with _patch_hook(InvoiceFailureCommentOperator) as prop:
        prop.return_value.comment.return_value = _entry()
        _failure_step().execute(context)
    prop.return_value.comment.assert_called_once_with(
        "RT-1",
        failure_comment(REQUEST.as_xcom(), step=step, message=message, run_id=RUN_ID),
        idempotency_key=_key("report_failure", f"{REFERENCE}:failure:{RUN_ID}:{step}"),
    )


def test_failure_comment_skips_a_run_that_stopped_before_its_ticket() -> None:
    with (
        _patch_hook(InvoiceFailureCommentOperator) as prop,
        pytest.raises(
            AirflowSkipException,
            match=exactly("the run stopped before it had a ticket; the reason is in the failed step's log"),
        ),
    ):
        _failure_step(ticket_id="").execute(_context("report_failure"))
    assert prop.return_value.method_calls == []
