"""Support workflows' task bodies (kept out of the DAG files so they parse fast)."""
