"""DAG bundles: where the workflows' code comes from (Git in production)."""
