"""Stores as servers of a test's own: a fresh PostgreSQL cluster (for the audit trail, the evidence,
the KPIs), with one database (the connectors' rate limit and creation lock), or a fresh Redis, each
stopped at the end."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from devstack import postgres, redis
from devstack.config import Profile


@contextlib.contextmanager
def postgres_cluster(profile: Profile) -> Iterator[Profile]:
    """A PostgreSQL cluster of ``profile``, initialised fresh; stopped at the end."""
    postgres.ensure_installed()
    postgres.initialise(profile, fresh=True)
    postgres.start(profile)
    try:
        yield profile
    finally:
        postgres.stop(profile)


@contextlib.contextmanager
def postgres_database(profile: Profile, database: str) -> Iterator[Profile]:
    """A PostgreSQL cluster of ``profile``, initialised fresh, with ``database``; stopped at the end."""
    with postgres_cluster(profile):
        postgres.create_database(profile, database)
        yield profile


@contextlib.contextmanager
def redis_store(profile: Profile) -> Iterator[str]:
    """A Redis of ``profile`` (port api_port + 30), started fresh; yields its rate-limit database's
    URL (it holds the password: never print it). Stopped at the end."""
    redis.ensure_installed()
    redis.start(profile, fresh=True)
    try:
        yield redis.url(profile, redis.RATELIMIT_DB)
    finally:
        redis.stop(profile)
