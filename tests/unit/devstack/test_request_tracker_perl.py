"""``RequestTracker.create_tickets_with_perl``: the ids a Perl script prints, exactly as many as asked."""

from __future__ import annotations

import shutil

import pytest

from devstack.config import Profile
from devstack.request_tracker import RequestTracker

pytestmark = pytest.mark.skipif(shutil.which("perl") is None, reason="needs perl (Debian has it)")


def _tracker() -> RequestTracker:
    # Only the environment of the profile's RT is used; nothing is created on disk.
    return RequestTracker(Profile(name="perl-unit", api_port=0, pg_port=0, moto_port=0, smtp_port=0))


PRINTS_IDS = 'my ($n) = @ARGV; print "$_\\n" for (1 .. $n);'


def test_returns_the_printed_ids() -> None:
    assert _tracker().create_tickets_with_perl(PRINTS_IDS, "3", count=3) == ["1", "2", "3"]


@pytest.mark.parametrize(
    ("script", "args", "message"),
    [
        pytest.param(PRINTS_IDS, ("2",), r"created 2 of 3 tickets \(exit 0\)", id="too-few"),
        pytest.param(
            'print "7\\n"; die "ticket 1: no such queue\\n";',
            (),
            r"created 1 of 3 tickets \(exit \d+\): .*no such queue",
            id="dies",
        ),
    ],
)
def test_a_short_or_failed_run_names_the_count_exit_and_stderr(
    script: str, args: tuple[str, ...], message: str
) -> None:
    with pytest.raises(RuntimeError, match=message):
        _tracker().create_tickets_with_perl(script, *args, count=3)
