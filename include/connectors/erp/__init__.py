"""ERP connectors: where validated billable lines become invoices.

One adapter so far, :mod:`include.connectors.erp.business_central` (Microsoft Dynamics 365 Business
Central, standard REST API v2.0). Importing this package imports no adapter.
"""
