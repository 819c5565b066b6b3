"""An approver's authenticator app, for the tests and benchmarks (issue 20).

Each answer to an approval request needs a fresh TOTP code (include/approvals/second_factor.py) and
the MFA server refuses a code it has seen (and every older one) for that token. A person types the
code their phone shows now; a test answering several requests as one user within 30 seconds takes
the codes of successive time steps, from as far back to as far ahead as the MFA server's window
accepts (one step of margin at the old end, which the clock may cross in flight), and waits for the
clock beyond that. Never used by the product: its seeds are the local stack's, kept in
``.local/<profile>/secrets/totp/``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import pyotp

STEP_SECONDS = 30


class Authenticator:
    """The codes of a person's enrolled TOTP tokens, each handed out once, oldest acceptable first.

    :param seed_b32: the token's seed (base32), as enrolled.
    :param backups: the seeds of the person's backup tokens (spare authenticators, whose codes the
        MFA server accepts too): a test answering many requests in a row takes codes of each.
    :param back: how many steps before the current one the MFA server accepts (its window).
    :param ahead: how many steps after the current one the MFA server accepts.
    """

    def __init__(
        self,
        seed_b32: str,
        *,
        back: int,
        ahead: int,
        backups: Sequence[str] = (),
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._totp = pyotp.TOTP(seed_b32, interval=STEP_SECONDS)
        self._tokens = [self._totp, *(pyotp.TOTP(seed, interval=STEP_SECONDS) for seed in backups)]
        self._last = [-1] * len(self._tokens)
        self._back = max(back - 1, 0)  # the margin: a code of the oldest step may expire in flight
        self._ahead = ahead
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()

    def next_code(self) -> str:
        with self._lock:
            now = int(self._clock() // STEP_SECONDS)
            # The token whose next unused step is the oldest (the main token first on a tie).
            counter, index = min((max(now - self._back, last + 1), i) for i, last in enumerate(self._last))
            if counter > now + self._ahead:
                # Every acceptable code is used: wait until this one is inside the window.
                self._sleep((counter - self._ahead) * STEP_SECONDS - self._clock() + 0.05)
            self._last[index] = counter
            return str(self._tokens[index].at(counter * STEP_SECONDS))

    def code_of_step(self, offset: int) -> str:
        """The code ``offset`` steps from now, without taking it (for tests of refused codes)."""
        return str(self._totp.at(self._clock() + offset * STEP_SECONDS))
