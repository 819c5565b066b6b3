"""The evidence pack's ``report.pdf``: report.html printed by headless Chromium, offline.

Chromium (Debian's ``/usr/bin/chromium``, the one the UI tests use) prints the page it is given
(``--headless --print-to-pdf``) from a ``file://`` URL. The page is self-contained (inline CSS and
SVG, no script; its Content-Security-Policy forbids scripts and every fetch), and Chromium is
started so that it could not reach a network anyway: every request goes to a dead proxy
(``127.0.0.1:9``), background networking, component updates, sync and extensions are off. It runs
with a throw-away profile and ``HOME`` in a temporary directory outside the pack, with a minimal
environment (a task's environment is not passed on). As root, Chromium refuses to start with its
sandbox, so there (the local stack, CI containers) it runs with ``--no-sandbox``; as any other user
it keeps its sandbox.

Where Chromium is missing, :func:`render_pdf` raises :class:`PdfUnavailable` and the pack is built
without report.pdf (its summary.json says why): the records, the proof and report.html are the
evidence; the PDF is a convenience copy of report.html. A Chromium that is there but fails or
hangs raises :class:`PdfRenderError`, handled the same way (docs/evidence.md, "The PDF").
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

BINARY: Final = Path("/usr/bin/chromium")
PDF_FILE: Final = "report.pdf"
TIMEOUT_SECONDS: Final = 90.0
PDF_MAGIC: Final = b"%PDF-"
_PDF_DATE = re.compile(rb"/(CreationDate|ModDate) \(D:(\d{14})\+00'00'\)")


class PdfUnavailable(RuntimeError):
    """No Chromium where the pack is built: the pack has no report.pdf."""


class PdfRenderError(RuntimeError):
    """Chromium is there but did not print the page (the message names the binary and the exit)."""


def chromium_command(binary: Path, source: Path, target: Path, profile: Path, *, as_root: bool) -> list[str]:
    """Chromium's argv printing ``source`` (a local HTML file) to ``target``; no secret in it."""
    return [
        str(binary),
        "--headless",
        *(["--no-sandbox"] if as_root else []),
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-extensions",
        "--disable-sync",
        "--no-first-run",
        "--proxy-server=127.0.0.1:9",
        "--proxy-bypass-list=<-loopback>",
        "--no-pdf-header-footer",
        f"--user-data-dir={profile}",
        f"--print-to-pdf={target}",
        source.resolve().as_uri(),
    ]


def _last_lines(text: str, count: int = 3) -> str:
    """Chromium's own complaint, without its D-Bus noise (no bus in a container), cut short."""
    lines = [line for line in text.splitlines() if line.strip() and "dbus" not in line.lower()]
    return " | ".join(line[:200] for line in lines[-count:]) or "no message"


def pin_dates(pdf: bytes, moment: datetime) -> bytes:
    """Chromium's ``/CreationDate`` and ``/ModDate`` (the only bytes that differ between two prints
    of one page) set to ``moment``, same length, so cross-reference offsets stay right: the same
    records give the same report.pdf, hence the same manifest and pack id (a re-run stores nothing
    new). A PDF whose dates are written otherwise is returned as it is."""
    stamp = moment.astimezone(UTC).strftime("%Y%m%d%H%M%S").encode("ascii")
    return _PDF_DATE.sub(lambda m: b"/" + m.group(1) + b" (D:" + stamp + b"+00'00')", pdf)


def render_pdf(
    source: Path,
    target: Path,
    *,
    binary: Path = BINARY,
    timeout: float = TIMEOUT_SECONDS,
    dated: datetime | None = None,
) -> Path:
    """Print ``source`` (report.html) to ``target`` (report.pdf) with headless Chromium.

    :param dated: the PDF's creation and modification dates (:func:`pin_dates`; the pack passes
        the period's end); ``None``: Chromium's clock.
    :returns: ``target``.
    :raises PdfUnavailable: ``binary`` does not exist.
    :raises PdfRenderError: Chromium failed, timed out, or wrote no PDF (``target`` is removed).
    """
    if not binary.exists():
        raise PdfUnavailable(f"Chromium ({binary}) is not installed where the pack was built")
    with tempfile.TemporaryDirectory(prefix="evidence-chromium-") as scratch:
        home = Path(scratch)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "LANG": "C.UTF-8",
            "TZ": "UTC",
            "XDG_CONFIG_HOME": str(home / "config"),
            "XDG_CACHE_HOME": str(home / "cache"),
        }
        command = chromium_command(binary, source, target, home / "profile", as_root=os.geteuid() == 0)
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=timeout, env=env, check=False
            )
        except subprocess.TimeoutExpired:
            target.unlink(missing_ok=True)
            raise PdfRenderError(f"{binary} did not print {source.name} within {timeout:.0f} s") from None
        except OSError as error:
            raise PdfRenderError(f"{binary} could not be started: {error.strerror}") from None
    written = target.is_file() and target.read_bytes()[: len(PDF_MAGIC)] == PDF_MAGIC
    if done.returncode != 0 or not written:
        target.unlink(missing_ok=True)
        raise PdfRenderError(
            f"{binary} did not print {source.name} to a PDF (exit {done.returncode}): "
            f"{_last_lines(done.stderr)}"
        )
    if dated is not None:
        target.write_bytes(pin_dates(target.read_bytes(), dated))
    return target
