"""Approvers' second factor (issue 20): enrol, reset and inspect TOTP tokens on privacyIDEA.

``python -m include.cli mfa enrol USER``: a new TOTP token for directory user ``USER`` (an earlier
one is replaced: lost phone, new phone). The ``otpauth://`` URL and the base32 seed are printed ONCE,
to the terminal, for the person's authenticator app (scan or type the setup key); they are kept
nowhere and never logged. Printing them into a pipe or file is refused unless ``--to-pipe`` is
given (a seed in a CI log or a shell history file is a second factor for whoever reads it).

``python -m include.cli mfa reset USER``: clear the fail counter of the user's tokens (after 10
wrong or reused codes privacyIDEA refuses every code, even the right one).

``python -m include.cli mfa status USER``: the user's tokens (serial, state, fail counter); no secrets.

The admin credentials come from the environment or a file, never from the command line (which other
users see in ``ps`` and the shell keeps in its history):

- ``ORCH_MFA_URL`` (or ``--url``): privacyIDEA's base URL, e.g. ``http://127.0.0.1:8120``;
- ``ORCH_MFA_ADMIN_USER`` (or ``--admin-user``; default ``admin``);
- ``ORCH_MFA_ADMIN_PASSWORD``, or a file named by ``--admin-password-file`` /
  ``ORCH_MFA_ADMIN_PASSWORD_FILE`` that only its owner can read (0600 or stricter; the local stack
  keeps it in ``.local/<profile>/secrets/privacyidea-admin-password``);
- ``ORCH_MFA_REALM`` (or ``--realm``; default: privacyIDEA's default realm).

Exit status: 0 done, 1 privacyIDEA refused or failed (its message on stderr), 2 bad usage or
credentials.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    # Imported in the handlers: the connector module imports Airflow's hook base (about 1.5 s),
    # which `python -m include.cli --help` should not pay for.
    from include.connectors.mfa import PrivacyIdeaAdmin, TokenStatus

ENV_URL = "ORCH_MFA_URL"
ENV_ADMIN_USER = "ORCH_MFA_ADMIN_USER"
ENV_ADMIN_PASSWORD_VALUE = "ORCH_MFA_ADMIN_PASSWORD"  # noqa: S105 - the variable's name
ENV_ADMIN_PASSWORD_FILE = "ORCH_MFA_ADMIN_PASSWORD_FILE"  # noqa: S105 - the variable's name
ENV_REALM = "ORCH_MFA_REALM"
DEFAULT_ADMIN_USER = "admin"


class CredentialsError(ValueError):
    """The admin credentials are missing or kept unsafely; the message says what and where."""


def read_password_file(path: Path) -> str:
    """The password in ``path``, which must be a regular file of ours that nobody else can read."""
    try:
        info = path.stat()
    except OSError as exc:
        raise CredentialsError(f"admin password file {path}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise CredentialsError(f"admin password file {path} is not a regular file")
    if info.st_mode & 0o077:
        raise CredentialsError(
            f"admin password file {path} has mode {stat.S_IMODE(info.st_mode):04o}: "
            "others can read it; chmod 600 it (or stricter)"
        )
    if info.st_uid != os.geteuid():
        raise CredentialsError(f"admin password file {path} belongs to another user (uid {info.st_uid})")
    password = path.read_text().strip()
    if not password:
        raise CredentialsError(f"admin password file {path} is empty")
    return password


def admin_client(args: argparse.Namespace, environ: dict[str, str] | None = None) -> PrivacyIdeaAdmin:
    """The admin client from flags and environment (see the module's doc)."""
    from include.connectors.mfa import PrivacyIdeaAdmin

    env = dict(os.environ) if environ is None else environ
    url = args.url or env.get(ENV_URL)
    if not url:
        raise CredentialsError(f"privacyIDEA's URL: give --url or set {ENV_URL}")
    password_file = args.admin_password_file or env.get(ENV_ADMIN_PASSWORD_FILE)
    if password_file:
        password = read_password_file(Path(password_file))
    elif env.get(ENV_ADMIN_PASSWORD_VALUE):
        password = env[ENV_ADMIN_PASSWORD_VALUE]
    else:
        raise CredentialsError(
            f"the privacyIDEA admin password: set {ENV_ADMIN_PASSWORD_VALUE}, or name a 0600 file with "
            f"--admin-password-file or {ENV_ADMIN_PASSWORD_FILE} (never on the command line)"
        )
    return PrivacyIdeaAdmin(
        url,
        username=args.admin_user or env.get(ENV_ADMIN_USER) or DEFAULT_ADMIN_USER,
        password=password,
        realm=args.realm or env.get(ENV_REALM) or None,
    )


def token_state(token: TokenStatus) -> str:
    if token.revoked:
        return "revoked"
    if not token.active:
        return "disabled"
    if token.locked:
        return "locked"
    if token.fail_locked:
        return "locked: fail counter reached (mfa reset)"
    if token.rollout_state not in ("", "enrolled"):
        return f"not ready ({token.rollout_state})"
    return "ok"


def _enrol(args: argparse.Namespace, client: PrivacyIdeaAdmin, out: TextIO) -> int:
    if not args.to_pipe and not out.isatty():
        print(
            "mfa enrol: standard output is not a terminal; the seed would land in a file or a log. "
            "Run it in a terminal, or pass --to-pipe if that is really meant.",
            file=sys.stderr,
        )
        return 2
    enrolment = client.enrol_totp(args.user)
    replaced = f" (replaces {', '.join(enrolment.replaced)})" if enrolment.replaced else ""
    print(f"Enrolled TOTP token {enrolment.serial} for {enrolment.uid}{replaced}.", file=out)
    print("Add it to the authenticator app now; it is shown only this once and kept nowhere:", file=out)
    print(f"  otpauth URL: {enrolment.otpauth_url}", file=out)
    print(f"  setup key:   {enrolment.seed_b32}  (TOTP, SHA1, 6 digits, 30 s)", file=out)
    out.flush()
    return 0


def _reset(args: argparse.Namespace, client: PrivacyIdeaAdmin, out: TextIO) -> int:
    count = client.reset_failcounter(args.user)
    print(f"Fail counter cleared on {count} token(s) of {args.user}.", file=out)
    return 0


def _status(args: argparse.Namespace, client: PrivacyIdeaAdmin, out: TextIO) -> int:
    tokens = client.tokens(args.user)
    if not tokens:
        print(
            f"{args.user} has no token: approval answers will be refused (mfa enrol {args.user}).", file=out
        )
        return 0
    for token in tokens:
        fails = f"{token.failcount}/{token.maxfail}"
        print(f"{token.serial:24} {token.tokentype:6} fails {fails:6} {token_state(token)}", file=out)
    return 0


COMMANDS = {"enrol": _enrol, "reset": _reset, "status": _status}


def handle(
    args: argparse.Namespace, *, out: TextIO | None = None, environ: dict[str, str] | None = None
) -> int:
    from include.connectors.mfa import MfaAdminError

    out = out or sys.stdout
    try:
        client = admin_client(args, environ)
    except CredentialsError as exc:
        print(f"mfa {args.mfa_command}: {exc}", file=sys.stderr)
        return 2
    try:
        return COMMANDS[args.mfa_command](args, client, out)
    except MfaAdminError as exc:
        print(f"mfa {args.mfa_command} {args.user}: {exc}", file=sys.stderr)
        return 1


def register(subparsers: Any) -> None:
    """Add ``mfa enrol|reset|status`` to the ``include.cli`` command line."""
    mfa = subparsers.add_parser(
        "mfa",
        help="approvers' TOTP tokens on privacyIDEA (enrol, reset the fail counter, status)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = mfa.add_subparsers(dest="mfa_command", required=True)
    helps = {
        "enrol": "enrol (or replace) USER's TOTP token; prints the setup key once",
        "reset": "clear the fail counter of USER's tokens",
        "status": "list USER's tokens and their state",
    }
    for name, help_text in helps.items():
        # No abbreviations: "--admin-password SECRET" must be an error, not a file named SECRET.
        command = commands.add_parser(name, help=help_text, allow_abbrev=False)
        command.add_argument("user", help="the directory user (uid)")
        command.add_argument("--url", help=f"privacyIDEA's base URL (default ${ENV_URL})")
        command.add_argument("--admin-user", help=f"admin name (default ${ENV_ADMIN_USER} or admin)")
        command.add_argument(
            "--admin-password-file",
            help=f"a 0600 file holding the admin password (default ${ENV_ADMIN_PASSWORD_FILE}, "
            f"else ${ENV_ADMIN_PASSWORD_VALUE})",
        )
        command.add_argument(
            "--realm", help=f"the users' realm (default ${ENV_REALM} or the server's default)"
        )
        if name == "enrol":
            command.add_argument(
                "--to-pipe",
                action="store_true",
                help="print the setup key even when standard output is not a terminal",
            )
        command.set_defaults(handler=handle)
