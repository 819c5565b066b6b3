"""The orchestrator's command line: ``python -m include.cli <command>`` (``make help`` lists them)."""
