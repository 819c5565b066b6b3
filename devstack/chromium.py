"""Debian's Chromium: the workers print the evidence packs' report.pdf with it, and the UI tests
drive it headless over the DevTools protocol.

Not on a new machine: installed from Debian like the other local services, by the stack at start
(devstack/stack.py) and by the UI tests on first use.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from devstack import processes
from devstack.processes import ServiceError

BINARY = Path("/usr/bin/chromium")
# fonts-liberation: without a font the screenshots show boxes instead of text.
PACKAGES = ("chromium", "fonts-liberation")


def ensure_installed() -> float:
    """Install Chromium from Debian if missing; return the seconds spent (0.0: it was there)."""
    if BINARY.exists():
        return 0.0
    began = time.monotonic()
    prefix = processes.root_prefix("Chromium", PACKAGES)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    processes.apt_install(prefix, PACKAGES, env)
    if not BINARY.exists():
        raise ServiceError(f"installing {' '.join(PACKAGES)} did not leave {BINARY}")
    return time.monotonic() - began
