"""Data validation with Great Expectations: one module per kind of input, each running its suite with
GE's own API on a pandas DataFrame in an ephemeral context (in-memory stores: no GE project folder,
no data docs). Suites live in code or as JSON in ``suites/``.

Importing this package imports nothing: each module imports pandas and great_expectations on first
validation, so DAG files that reference them cost nothing at parse time.
"""
