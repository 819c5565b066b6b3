"""The tests' authenticator app (devstack/totp.py): each code once, oldest acceptable first, never
outside the MFA server's window."""

from __future__ import annotations

import pyotp

from devstack.totp import STEP_SECONDS, Authenticator

SEED = pyotp.random_base32()


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def _step(clock: Clock) -> int:
    return int(clock.now // STEP_SECONDS)


def test_codes_go_forward_from_inside_the_window_and_wait_beyond_it() -> None:
    clock = Clock(1_800_000_015.0)
    now = _step(clock)
    app = Authenticator(SEED, back=2, ahead=1, clock=clock, sleep=clock.sleep)
    totp = pyotp.TOTP(SEED)
    # One step of margin at the old end: now-1, now, now+1 without waiting.
    codes = [app.next_code() for _ in range(3)]
    assert codes == [totp.at((now + offset) * STEP_SECONDS) for offset in (-1, 0, 1)]
    assert clock.slept == []
    # The next one (now+2) is beyond the window: wait until it is the step after the current one.
    fourth = app.next_code()
    assert fourth == totp.at((now + 2) * STEP_SECONDS)
    assert len(clock.slept) == 1
    assert _step(clock) == now + 1
    assert len({*codes, fourth}) == 4


def test_after_a_pause_the_codes_start_from_the_window_again() -> None:
    clock = Clock(1_800_000_000.0)
    app = Authenticator(SEED, back=2, ahead=1, clock=clock, sleep=clock.sleep)
    app.next_code()
    clock.now += 10 * STEP_SECONDS
    assert app.next_code() == pyotp.TOTP(SEED).at((_step(clock) - 1) * STEP_SECONDS)
    assert clock.slept == []


def test_backup_tokens_add_codes_before_any_wait() -> None:
    clock = Clock(1_800_000_015.0)
    now = _step(clock)
    backup = pyotp.random_base32()
    app = Authenticator(SEED, back=2, ahead=1, backups=[backup], clock=clock, sleep=clock.sleep)
    codes = [app.next_code() for _ in range(6)]
    main, spare = pyotp.TOTP(SEED), pyotp.TOTP(backup)
    expected = [token.at((now + offset) * STEP_SECONDS) for offset in (-1, 0, 1) for token in (main, spare)]
    assert codes == expected
    assert clock.slept == []
