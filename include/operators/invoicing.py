"""Milestone invoice steps: check the request, validate the PSA export, create and post the invoice in
Business Central, archive it; plus the two ticket comments that tell finance how it ended.

Thin over :mod:`include.invoicing` and :mod:`include.connectors.erp.business_central`. Every step
reads the request from the run's params (:meth:`MilestoneRequest.from_params`), so a step checks the
request again rather than trusting an upstream XCom, and steps pass only results downstream (no
credentials, no line data). Errors a retry cannot fix (bad input, invalid lines, the ERP refusing,
an export changed after the approval, an archive that differs) fail the step at once with the
reason; the reason is also pushed to XCom ``failure`` for the ticket. Timeouts, 5xx and 429 are
retried by the connector, then by Airflow. When the shared ERP rate limit would hold a step longer
than its bound, the step defers (no worker slot held) and then runs again from the top: every call
it makes is idempotent.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger
from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from include.approvals.verify import RequiresApproval
from include.audit.emit import side_effect as audit_side_effect
from include.operators.failing import failing_fast, message_of
from include.operators.ticketing import CommentTicketOperator

if TYPE_CHECKING:
    from include.connectors.erp.business_central import BusinessCentralHook
    from include.invoicing.milestone import MilestoneRequest

T = TypeVar("T")
FAILURE_XCOM_KEY = "failure"
PROBLEMS_XCOM_KEY = "problems"


def _permanent_errors() -> tuple[type[BaseException], ...]:
    """Invoicing's own errors whose retry would fail the same way (besides a connector's
    ``PermanentError``): the step fails at once with the reason."""
    from include.invoicing.archive import ArchiveConflictError
    from include.invoicing.milestone import ExportChangedError, InvoiceRequestError

    return (InvoiceRequestError, ExportChangedError, ArchiveConflictError)


class _InvoicingStep(BaseOperator):
    """Base: the request from the params, the ERP hook, failure reasons to XCom, backpressure as deferral.

    :param erp_conn_id: the Business Central connection.
    :param tenant: the tenant invoiced (templated; default the run's ``tenant`` param): the ERP
        calls draw from its rate-limit bucket.
    """

    template_fields: Sequence[str] = ("tenant",)
    ui_color = "#e3f1e3"

    def __init__(
        self,
        *,
        erp_conn_id: str = "business_central_default",
        tenant: str = "{{ params.tenant }}",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.erp_conn_id = erp_conn_id
        self.tenant = tenant

    @cached_property
    def hook(self) -> BusinessCentralHook:
        from include.connectors.erp.business_central import BusinessCentralHook

        return BusinessCentralHook(self.erp_conn_id, tenant=self.tenant)

    def run(self, context: Any, request: MilestoneRequest) -> Any:
        raise NotImplementedError

    def execute(self, context: Any) -> Any:
        return failing_fast(self.task_id, lambda: self._reporting(context), *_permanent_errors())

    def _reporting(self, context: Any) -> Any:
        """The step; whatever stops it is pushed to XCom ``failure`` first, for the ticket."""
        try:
            return self.run(context, self.request(context))
        except Exception as error:
            context["ti"].xcom_push(
                key=FAILURE_XCOM_KEY, value={"step": self.task_id, "message": message_of(error)}
            )
            raise

    def execute_complete(self, context: Any, event: Any = None) -> Any:
        """Back from a rate-limit deferral: the same step again (its calls are idempotent)."""
        return self.execute(context)

    @staticmethod
    def request(context: Any) -> MilestoneRequest:
        from include.invoicing.milestone import InvoiceRequestError, MilestoneRequest

        try:
            return MilestoneRequest.from_params(context["params"])
        except InvoiceRequestError as error:
            raise AirflowFailException(f"the invoice request is refused: {error}") from None

    def calling_erp(self, call: Callable[[], T]) -> T:
        from include.connectors.errors import RateLimitBackpressure

        try:
            return call()
        except RateLimitBackpressure as exc:
            self.log.info(
                "ERP rate limit: deferring %.1fs instead of holding a worker slot", exc.wait_seconds
            )
            self.defer(
                trigger=TimeDeltaTrigger(timedelta(seconds=exc.wait_seconds)), method_name="execute_complete"
            )

    @staticmethod
    def pulled(context: Any, task_id: str, key: str = "return_value") -> dict[str, Any]:
        value = context["ti"].xcom_pull(task_ids=task_id, key=key)
        if not isinstance(value, Mapping):
            raise AirflowFailException(f"no result from step {task_id} (key {key})")
        return dict(value)


class CheckMilestoneRequestOperator(_InvoicingStep):
    """First step, read-only: the request is complete and invoiceable, and the PSA export exists.

    Runs before the ticket, so bad input is refused before anything exists anywhere.
    """

    def run(self, context: Any, request: MilestoneRequest) -> dict[str, Any]:
        from include.invoicing.milestone import ExportLocation, head_export

        location = ExportLocation.from_connection(request.export_key)
        head = head_export(location.s3(), location)
        self.log.info(
            "milestone %s of contract %s, tenant %s (customer %s), period %s..%s: export %s (%d bytes); "
            "external reference %s",
            request.milestone_id,
            request.contract_id,
            request.tenant,
            request.customer_number,
            request.period_start,
            request.period_end,
            location.uri,
            head["size"],
            request.external_reference,
        )
        return {**request.as_xcom(), "export": {"uri": location.uri, **head}}


class ValidateMilestoneLinesOperator(_InvoicingStep):
    """The export against the Great Expectations suite and the ERP's customer; the approval's text.

    The validation result is archived (write-once) whether it passed or not. Problems stop the run
    here, before anything exists in the ERP: they are logged, pushed to XCom ``problems`` (the
    ticket comment) and named in the failure.
    """

    def run(self, context: Any, request: MilestoneRequest) -> dict[str, Any]:
        from include.invoicing import archive, messages
        from include.invoicing.milestone import ExportLocation, invoice_totals, read_export, validate_export
        from include.policies.invoicing import load_invoicing

        policy = load_invoicing()
        location = ExportLocation.from_connection(request.export_key)
        body, digest = read_export(location.s3(), location)
        validation = validate_export(body, request, known_customers=policy.tenants)
        stored = self._archive_validation(
            context, request, validation.archive_document(), location.uri, digest
        )
        problems = list(validation.problems)
        customer = None
        if validation.success:
            customer = self.calling_erp(lambda: self.hook.get_customer(request.customer_number))
            if customer is None:
                problems.append(
                    f"customer {request.customer_number} (tenant {request.tenant}) does not exist in "
                    "Business Central; correct the number in include/policies/invoicing.yaml"
                )
            elif customer.invoicing_blocked:
                problems.append(
                    f"customer {customer.number} ({customer.name}) is blocked in Business Central "
                    f"('{customer.blocked}'): no invoice can be posted for it until finance unblocks it"
                )
        result = validation.result
        if problems or customer is None or result is None or not result.invoices:
            self._stop(context, request, problems, validation.line_count, location.uri, digest)
        totals = invoice_totals(result.invoices[0].totals)
        existing = self.calling_erp(lambda: self.hook.get_invoice_by_reference(request.external_reference))
        existing_state = None if existing is None else {"number": existing.number, "status": existing.status}
        preview = [
            {
                "line_id": line.line_id,
                "date": line.date.isoformat(),
                "project": line.project,
                "description": line.description,
                "quantity": str(line.quantity),
                "unit_price": str(line.unit_price),
                "vat_rate": str(line.vat_rate),
                "net": str(line.net),
            }
            for line in sorted(result.lines, key=lambda x: (x.date, x.row))
        ]
        self.log.info("%s", result.summary)
        return {
            "export_uri": location.uri,
            "export_sha256": digest,
            "line_count": validation.line_count,
            "totals": totals,
            "gross": messages.money(totals["gross"], totals["currency"]),
            "customer": {"number": customer.number, "name": customer.name},
            "existing": existing_state,
            "validation_archive": stored.as_dict(),
            "approval_markdown": messages.approval_body(
                request.as_xcom(),
                customer_name=customer.name,
                totals=totals,
                lines=preview,
                export_uri=location.uri,
                export_sha256=digest,
                existing=existing_state,
                tolerance=str(policy.totals_tolerance),
            ),
            "archive_key": archive.invoice_key(request.archive_prefix),
        }

    def _archive_validation(
        self, context: Any, request: MilestoneRequest, result: dict[str, Any], export_uri: str, digest: str
    ) -> Any:
        from include.invoicing import archive
        from include.policies.invoicing import load_invoicing

        suite = archive.suite_sha256()
        document = archive.validation_document(
            request.as_xcom(), result, export_uri=export_uri, export_sha256=digest, suite=suite
        )
        target = archive.ArchiveTarget.from_audit_connection()
        key = archive.validation_key(request.archive_prefix, digest, suite)
        until = archive.retain_until(load_invoicing().archive_retention_days)
        stored = archive.put_write_once(
            target.s3(), target.bucket, key, archive.document_bytes(document), until=until
        )
        audit_side_effect(
            context,
            system="s3",
            operation="archive_validation",
            object_id=f"s3://{target.bucket}/{key}",
            tenant=request.tenant,
            created=stored.written,
            sha256=stored.sha256,
            external_reference=request.external_reference,
            passed=bool(result["success"]),
        )
        return stored

    def _stop(
        self,
        context: Any,
        request: MilestoneRequest,
        problems: list[str],
        line_count: int,
        export_uri: str,
        digest: str,
    ) -> NoReturn:
        from include.invoicing.messages import problems_comment

        for problem in problems:
            self.log.error("billable lines: %s", problem)
        context["ti"].xcom_push(
            key=PROBLEMS_XCOM_KEY,
            value={
                "problems": problems,
                "export_sha256": digest,
                "comment": problems_comment(
                    request.as_xcom(),
                    export_uri=export_uri,
                    problems=problems,
                    line_count=line_count,
                    run_id=context["run_id"],
                ),
            },
        )
        raise AirflowFailException(
            f"{len(problems)} problem(s) in the billable lines of {export_uri}, nothing created in Business "
            f"Central; first: {problems[0]}"
        )


class _ApprovedInvoicingStep(RequiresApproval, _InvoicingStep):
    """An ERP write: only on a verified approval, of exactly the export the controller saw.

    The approved artifact is the export's SHA-256 as bound in the controller's request (Airflow's
    record of the answer, not an XCom); the step reads the export again and refuses a file with
    another hash. A refusal is also the ticket's failure reason.
    """

    capability = "invoice-post"

    def act(self, context: Any) -> Any:
        return _InvoicingStep.execute(self, context)

    def execute_complete(self, context: Any, event: Any = None) -> Any:
        return self.execute(context)  # back from a rate-limit deferral: verify again, then act

    def on_refused(self, context: Any, error: BaseException) -> None:
        failure = {"step": self.task_id, "message": message_of(error)}
        context["ti"].xcom_push(key=FAILURE_XCOM_KEY, value=failure)

    def approved_export(self, validated: Mapping[str, Any]) -> str:
        """The approved export's SHA-256; the validation's record must name the same file."""
        from include.invoicing.milestone import ExportChangedError

        approved = self.approval.artifact if self.approval is not None else None
        if not approved:
            raise AirflowFailException(f"{self.task_id}: no verified approval of an export")
        if validated.get("export_sha256") != approved:
            raise ExportChangedError(
                f"the controller approved export {approved[:12]}..., but the validation step's record "
                f"names {str(validated.get('export_sha256'))[:12]}...: nothing done"
            )
        return approved


class CreateInvoiceOperator(_ApprovedInvoicingStep):
    """Create (or complete) the draft invoice from exactly the approved export (after the approval).

    :param validate_task_id: the validation step (the export's hash and the totals).
    """

    def __init__(self, *, validate_task_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.validate_task_id = validate_task_id

    def run(self, context: Any, request: MilestoneRequest) -> dict[str, Any]:
        from include.invoicing.milestone import ExportLocation, erp_lines, read_export, records_of

        validated = self.pulled(context, self.validate_task_id)
        approved = self.approved_export(validated)
        location = ExportLocation.from_connection(request.export_key)
        body, _ = read_export(location.s3(), location, expected_sha256=approved)
        lines = erp_lines(records_of(body, request))
        hook = self.hook
        result = self.calling_erp(
            lambda: hook.create_invoice(
                request.customer_number,
                request.external_reference,
                lines,
                validated["totals"]["currency"],
                datetime.now(UTC).date(),
            )
        )
        self.log.info(
            "%s draft %s (%s): %d of %d lines added, totals %s",
            "created" if result.created else "found",
            result.number,
            request.external_reference,
            result.lines_created,
            result.lines_total,
            result.totals.as_dict(),
        )
        audit_side_effect(
            context,
            system=hook.system,
            operation="create_invoice",
            object_id=request.external_reference,
            tenant=request.tenant,
            created=result.created,
            capability=self.capability,
            invoice_id=result.id,
            number=result.number,
            customer_number=request.customer_number,
            lines_created=result.lines_created,
            lines_total=result.lines_total,
            totals=result.totals.as_dict(),
            export_sha256=approved,
        )
        return {**result.as_dict(), "export_sha256": approved, "retries": hook.retry_count}


class PostInvoiceOperator(_ApprovedInvoicingStep):
    """Post the draft if its totals are the approved ones (within the policy's tolerance); once.

    The draft must have been made from the approved export (the create step's record names it).

    :param validate_task_id: the validation step (the export's hash and the approved totals).
    :param create_task_id: the create step (the draft's id and the export it was made from).
    """

    def __init__(self, *, validate_task_id: str, create_task_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.validate_task_id = validate_task_id
        self.create_task_id = create_task_id

    def run(self, context: Any, request: MilestoneRequest) -> dict[str, Any]:
        from include.policies.invoicing import load_invoicing

        validated = self.pulled(context, self.validate_task_id)
        export = self.approved_export(validated)
        approved = validated["totals"]
        draft = self.pulled(context, self.create_task_id)
        if draft.get("export_sha256") != export:
            raise AirflowFailException(
                f"{self.task_id}: the draft was made from export {str(draft.get('export_sha256'))[:12]}..., "
                f"not the approved {export[:12]}...: not posted"
            )
        hook = self.hook
        result = self.calling_erp(
            lambda: hook.post_invoice(
                draft["id"], expected_totals=approved, tolerance=load_invoicing().totals_tolerance
            )
        )
        if not result.posted:  # the hook logs a posting; say why nothing was posted
            self.log.info(
                "invoice %s (%s) was posted before (status %s): left as it is",
                result.number,
                request.external_reference,
                result.status,
            )
        audit_side_effect(
            context,
            system=hook.system,
            operation="post_invoice",
            object_id=request.external_reference,
            tenant=request.tenant,
            created=result.posted,
            capability=self.capability,
            invoice_id=result.id,
            number=result.number,
            status=result.status,
            totals=result.totals.as_dict(),
        )
        return {**result.as_dict(), "retries": hook.retry_count}


class ArchiveInvoiceOperator(_InvoicingStep):
    """The posted invoice, as Business Central holds it, into the Object Lock audit bucket (write-once).

    :param validate_task_id: the validation step (approved totals, export, validation archive).
    :param post_task_id: the post step (the invoice's id).
    """

    def __init__(self, *, validate_task_id: str, post_task_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.validate_task_id = validate_task_id
        self.post_task_id = post_task_id

    def run(self, context: Any, request: MilestoneRequest) -> dict[str, Any]:
        from include.invoicing import archive
        from include.policies.invoicing import load_invoicing

        validated = self.pulled(context, self.validate_task_id)
        posted = self.pulled(context, self.post_task_id)
        hook = self.hook
        invoice = self.calling_erp(lambda: hook.get_invoice(posted["id"]))
        if invoice.status == "Draft":
            raise AirflowFailException(
                f"invoice {invoice.number} is still a draft; only posted invoices are archived"
            )
        lines = self.calling_erp(lambda: hook.get_invoice_lines(invoice.id))
        document = archive.invoice_document(
            request.as_xcom(),
            invoice,
            lines,
            approved_totals=validated["totals"],
            export_uri=validated["export_uri"],
            export_sha256=validated["export_sha256"],
            validation=validated["validation_archive"]["key"],
        )
        target = archive.ArchiveTarget.from_audit_connection()
        key = archive.invoice_key(request.archive_prefix)
        until = archive.retain_until(load_invoicing().archive_retention_days)
        stored = archive.put_write_once(
            target.s3(), target.bucket, key, archive.document_bytes(document), until=until
        )
        self.log.info(
            "%s s3://%s/%s (SHA-256 %s)",
            "archived" if stored.written else "already archived, identical",
            target.bucket,
            key,
            stored.sha256,
        )
        audit_side_effect(
            context,
            system="s3",
            operation="archive_invoice",
            object_id=f"s3://{target.bucket}/{key}",
            tenant=request.tenant,
            created=stored.written,
            sha256=stored.sha256,
            external_reference=request.external_reference,
            number=invoice.number,
        )
        return {
            "bucket": target.bucket,
            "retain_until": (stored.retain_until or until).isoformat(),
            "objects": [validated["validation_archive"], stored.as_dict()],
        }


class InvoiceOutcomeCommentOperator(CommentTicketOperator):
    """The ticket's last word: posted (number, totals, approver, archive), or not posted and why.

    One comment per invoice once it is posted, whichever run posted or found it; a rejection or a
    timeout is its own comment per run (each is a decision worth seeing on the ticket).

    :param request_task_id: the request check step (the request).
    :param gate_task_id: the approval gate (its ``approval`` XCom: outcome, approver, comment).
    :param create_task_id: the create step.
    :param post_task_id: the post step.
    :param archive_task_id: the archive step (set only once the invoice is posted and archived).
    """

    def __init__(
        self,
        *,
        request_task_id: str,
        gate_task_id: str,
        create_task_id: str,
        post_task_id: str,
        archive_task_id: str,
        **kwargs: Any,
    ) -> None:
        super().__init__(body="", **kwargs)
        self.request_task_id = request_task_id
        self.gate_task_id = gate_task_id
        self.create_task_id = create_task_id
        self.post_task_id = post_task_id
        self.archive_task_id = archive_task_id

    def execute(self, context: Any) -> dict[str, Any]:
        from include.invoicing.messages import outcome_comment

        ti = context["ti"]
        request = ti.xcom_pull(task_ids=self.request_task_id)
        archived = ti.xcom_pull(task_ids=self.archive_task_id)
        self.body = outcome_comment(
            request,
            approval=ti.xcom_pull(task_ids=self.gate_task_id, key="approval"),
            created=ti.xcom_pull(task_ids=self.create_task_id),
            posted=ti.xcom_pull(task_ids=self.post_task_id),
            archived=archived,
        )
        reference = request["external_reference"]
        self.idempotency_basis = (
            f"{reference}:posted" if archived else f"{reference}:not-posted:{context['run_id']}"
        )
        return super().execute(context)


class InvoiceFailureCommentOperator(CommentTicketOperator):
    """Why the run stopped, on the ticket: the validation problems, or the step that failed and its reason.

    Runs when a step failed (``one_failed``); skips when the run stopped before it had a ticket.

    :param request_task_id: the request check step (the request).
    :param validate_task_id: the validation step (its ``problems`` XCom).
    :param step_task_ids: the steps whose ``failure`` XCom may hold the reason, in order.
    """

    def __init__(
        self, *, request_task_id: str, validate_task_id: str, step_task_ids: list[str], **kwargs: Any
    ):
        super().__init__(body="", trigger_rule="one_failed", **kwargs)
        self.request_task_id = request_task_id
        self.validate_task_id = validate_task_id
        self.step_task_ids = step_task_ids

    def execute(self, context: Any) -> dict[str, Any]:
        from include.invoicing.messages import failure_comment

        if not self.ticket_id:
            raise AirflowSkipException(
                "the run stopped before it had a ticket; the reason is in the failed step's log"
            )
        ti = context["ti"]
        request = ti.xcom_pull(task_ids=self.request_task_id)
        reference = request["external_reference"]
        problems = ti.xcom_pull(task_ids=self.validate_task_id, key=PROBLEMS_XCOM_KEY)
        if problems:
            self.body = problems["comment"]
            # The same export, validated again, is the same comment; a corrected export gets its own.
            self.idempotency_basis = f"{reference}:problems:{problems['export_sha256']}"
            return super().execute(context)
        failures = [ti.xcom_pull(task_ids=task_id, key=FAILURE_XCOM_KEY) for task_id in self.step_task_ids]
        failure = next((f for f in failures if f), {"step": "unknown", "message": "see the run's task logs"})
        self.body = failure_comment(
            request, step=failure["step"], message=failure["message"], run_id=context["run_id"]
        )
        self.idempotency_basis = f"{reference}:failure:{context['run_id']}:{failure['step']}"
        return super().execute(context)
