"""Entry point: ``python -m devstack up|start|stop|status [--profile run|test|...] [--fresh]``."""

from __future__ import annotations

import sys

from devstack.stack import main

if __name__ == "__main__":
    sys.exit(main())
