"""Secrets backends of the orchestrator (SEC-2): Keeper for department secrets, AWS for tenant secrets."""
