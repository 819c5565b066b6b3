"""What finance reads about a milestone invoice: the approval request and the ticket comments.

Amounts are shown as the invoice will show them (``EUR 1,234.50``), VAT rates in percent. Text that
comes from the PSA export (descriptions, projects) is escaped before it goes into Markdown, so a line
description cannot turn into a link or a table in the approval request.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

PREVIEW_LINES = 20
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+!|~])")


def money(amount: str | Decimal, currency: str) -> str:
    return f"{currency} {Decimal(amount):,.2f}"


def percent(rate: str | Decimal) -> str:
    return f"{format((Decimal(rate) * 100).normalize(), 'f')} %"


def _cell(text: Any) -> str:
    """PSA text in Markdown: special characters escaped, one line."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


def _plural(count: int, word: str) -> str:
    return f"{count:,} {word}{'' if count == 1 else 's'}"


def erp_state_sentence(existing: Mapping[str, Any] | None) -> str:
    """Where Business Central stands for this reference, and so what approving does."""
    if existing is None:
        return "no invoice with this reference yet: approving creates the invoice and posts it."
    if existing.get("status") == "Draft":
        return (
            f"draft {existing['number']} exists (an earlier run stopped before posting): approving "
            "completes it and posts it."
        )
    return (
        f"already posted as invoice {existing['number']} (status {existing.get('status')}): approving "
        "changes nothing in Business Central; the run checks it and archives it."
    )


def approval_body(
    request: Mapping[str, Any],
    *,
    customer_name: str,
    totals: Mapping[str, Any],
    lines: Sequence[Mapping[str, Any]],
    export_uri: str,
    export_sha256: str,
    existing: Mapping[str, Any] | None,
    tolerance: str,
) -> str:
    """Markdown for the finance controller: who is invoiced for what, the totals, the lines, the ERP state."""
    currency = str(totals["currency"])
    rows = ["| | " + currency + " |", "|---|---:|", f"| Net | {Decimal(totals['net']):,.2f} |"]
    for rate, amounts in sorted(totals["by_vat_rate"].items(), key=lambda item: Decimal(item[0])):
        rows.append(
            f"| VAT {percent(rate)} on {Decimal(amounts['net']):,.2f} | {Decimal(amounts['vat']):,.2f} |"
        )
    rows.append(f"| **Gross** | **{Decimal(totals['gross']):,.2f}** |")
    preview = [
        "| Line | Date | Project | Description | Quantity | Unit price | VAT | Net |",
        "|---|---|---|---|---:|---:|---:|---:|",
    ]
    for line in lines[:PREVIEW_LINES]:
        preview.append(
            f"| {_cell(line['line_id'])} | {line['date']} | {_cell(line['project'])} | "
            f"{_cell(line['description'])} | {Decimal(line['quantity']):,} | "
            f"{Decimal(line['unit_price']):,.2f} | {percent(line['vat_rate'])} | "
            f"{Decimal(line['net']):,.2f} |"
        )
    if len(lines) > PREVIEW_LINES:
        preview.append(f"\n... and {len(lines) - PREVIEW_LINES:,} more lines (all in the export).")
    differs = ""
    if Decimal(totals["line_vat"]) != Decimal(totals["vat"]):
        differs = (
            f" (summed per line the VAT would be {money(totals['line_vat'], currency)}; the invoice "
            "rounds per rate on the total, as Business Central does)"
        )
    return "\n".join(
        [
            f"Invoice **{_cell(customer_name)}** (Business Central customer "
            f"**{request['customer_number']}**, tenant `{request['tenant']}`) for contract "
            f"**{request['contract_id']}**, milestone "
            f"**{request['milestone_id']}**, period {request['period_start']} to {request['period_end']}: "
            f"**{money(totals['gross'], currency)}** gross, {_plural(int(totals['lines']), 'line')}.",
            "",
            *rows,
            "",
            f"VAT per rate on the invoice total{differs}. The draft is posted only if Business Central's "
            f"net, VAT and gross are each within {money(tolerance, currency)} of these amounts.",
            "",
            *preview,
            "",
            "All checks passed: amounts, VAT rates, currency, customer, duplicates, dates in the period.",
            "- **External reference** (Business Central External Document No.): "
            f"`{request['external_reference']}`",
            f"- **PSA export:** `{export_uri}`, SHA-256 `{export_sha256}`: the invoice is made from exactly "
            "this file",
            f"- **Business Central now:** {erp_state_sentence(existing)}",
        ]
    )


def problems_comment(
    request: Mapping[str, Any], *, export_uri: str, problems: Sequence[str], line_count: int, run_id: str
) -> str:
    """The ticket comment of a failed validation: every problem, what was not done, what to do."""
    listed = [f"- {problem}" for problem in problems[:25]]
    if len(problems) > 25:
        listed.append(f"- ... and {len(problems) - 25} more (all in the run's log and the archived result)")
    return "\n".join(
        [
            f"The billable lines of milestone {request['milestone_id']} (contract {request['contract_id']}, "
            f"tenant {request['tenant']}) cannot be invoiced: {_plural(len(problems), 'problem')} in "
            f"{_plural(line_count, 'line')} of {export_uri}:",
            *listed,
            "",
            "Nothing was created in Business Central. Correct the export in the PSA, then start the "
            f"workflow again. (Run {run_id}.)",
        ]
    )


def failure_comment(request: Mapping[str, Any], *, step: str, message: str, run_id: str) -> str:
    """The ticket comment when a step after validation failed (the ERP refused, the archive failed)."""
    return "\n".join(
        [
            f"The invoice {request['external_reference']} for tenant {request['tenant']} stopped at step "
            f"'{step}': {message}",
            "",
            "Business Central keeps what was done before this step (a draft is not posted by itself). "
            f"Starting the workflow again with the same input continues from there, creating nothing twice. "
            f"(Run {run_id}.)",
        ]
    )


def outcome_comment(
    request: Mapping[str, Any],
    *,
    approval: Mapping[str, Any] | None,
    created: Mapping[str, Any] | None,
    posted: Mapping[str, Any] | None,
    archived: Mapping[str, Any] | None,
) -> str:
    """The ticket's last comment: posted (number, totals, approver, archive), or not and why."""
    who = ((approval or {}).get("responded_by") or {}).get("name")
    comment = (approval or {}).get("comment") or ""
    said = f' ("{comment}")' if comment else ""
    if posted is None or archived is None:
        outcome = (approval or {}).get("outcome")
        if outcome == "timed_out":
            why = "nobody answered the finance approval in time (fail-safe: rejected)"
        elif outcome == "rejected":
            why = f"{who or 'the approver'} rejected it{said}"
        else:
            why = "it was not approved"
        return (
            f"Invoice {request['external_reference']} was not posted: {why}. Nothing was created in "
            "Business Central by this run."
        )
    totals = posted["totals"]
    currency = totals["currency"]
    origin = "created by this run" if (created or {}).get("created") else "found from an earlier run"
    keys = ", ".join(f"s3://{archived['bucket']}/{item['key']}" for item in archived["objects"])
    return "\n".join(
        [
            f"Invoice {posted['number']} is posted in Business Central for customer "
            f"{request['customer_number']}: net {money(totals['net'], currency)} + VAT "
            f"{money(totals['tax'], currency)} = gross {money(totals['gross'], currency)}, "
            f"{_plural(int((created or {}).get('lines_total') or 0), 'line')} ({origin}).",
            f"External reference: {request['external_reference']}. Approved by {who or '-'}{said}.",
            f"Archived under Object Lock (COMPLIANCE, until {archived['retain_until'][:10]}): {keys}",
        ]
    )
