"""Invoicing workflows: milestone invoices from a PSA export to a posted, archived ERP invoice.

:mod:`include.invoicing.milestone` (the request, the export, its validation and totals),
:mod:`include.invoicing.messages` (what finance reads: approval, ticket comments),
:mod:`include.invoicing.archive` (write-once copies in the Object Lock audit bucket). Operators
in ``include/operators/invoicing.py``; the DAG is ``dags/invoicing/milestone_invoice.py``.
"""
