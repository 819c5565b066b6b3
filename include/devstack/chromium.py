"""Debian's Chromium for the UI tests (headless, driven over the DevTools protocol).

Not on a new machine: installed from Debian like the other local services, on first use.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from include.devstack import processes
from include.devstack.processes import ServiceError

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
    install = [*prefix, "apt-get", "install", "-y", "-qq", "--no-install-recommends"]
    install += ["-o", "DPkg::Lock::Timeout=300", *PACKAGES]
    if subprocess.run(install, env=env, check=False, stdout=subprocess.DEVNULL).returncode != 0:
        # A missing or stale package list: refresh it once and try again.
        subprocess.run([*prefix, "apt-get", "update", "-qq"], env=env, check=True)
        subprocess.run(install, env=env, check=True, stdout=subprocess.DEVNULL)
    if not BINARY.exists():
        raise ServiceError(f"installing {' '.join(PACKAGES)} did not leave {BINARY}")
    return time.monotonic() - began
