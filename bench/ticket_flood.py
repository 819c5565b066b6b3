"""SOC ticket creation while customer tickets flood support triage (issue 19 item 5): goal <= 1.2x.

Against a real Request Tracker 5 (a devstack profile of its own, ``ticket-flood-bench``) with the
rate limits of ``rt_default`` as the stack seeds them (``devstack.request_tracker.rt_connection``)
and a shared Redis bucket store of the profile (``devstack/redis.py``):

1. ``--flood`` customer tickets are created in RT's ``support`` queue with RT's Perl API before its
   server starts (set-up, not measured; the seeded database is kept and copied back next time),
   their requestors in a customer's domain (``acme.example``: the spoofed-mail case, the same
   tenant as the SOC tickets);
2. ``--triage-workers`` processes run triage's own path over the flood's tickets
   (:func:`include.triage.tickets.triage_ticket` on a hook with triage's share, as
   :func:`include.triage.tickets.triage_hook` builds it: read, classify, write back, comment);
3. ``--cycles`` pairs of phases, **quiet** (the workers idle) then **flooded** (the workers
   triaging, measured from ``FLOOD_LEAD_SECONDS`` in, past the share's burst): in each, SOC
   tickets are created one after another in ``soc`` for tenant ``acme`` through
   :class:`~include.connectors.ticketing.request_tracker.RequestTrackerHook` (search before
   create, the create) and timed. Alternating phases put whatever else the machine does on both
   conditions alike (a quiet round then a flooded one measured the machine's load as much as the
   flood: ratios 2.9 and 5.0 with no triage call made, or eight).

Prints the figures and writes ``bench/results/ticket_flood.json``; ratio = flooded p50 / quiet p50.
``--no-share`` runs the flood on the connector's plain buckets (what triage did before issue 19),
for comparison. By hand: ``python -m bench.ticket_flood`` (about 100 s on the 2-core box, plus
about 70-90 s the first time to create the 500 tickets; starts and stops RT and Redis of its own
profile).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import queue
import shutil
import statistics
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from devstack.config import Profile

RESULTS = Path(__file__).parent / "results" / "ticket_flood.json"
# A profile of its own: RT on api_port + 10, Redis on api_port + 30 (no Airflow, no PostgreSQL).
BENCH_PROFILE = Profile(name="ticket-flood-bench", api_port=18980, pg_port=0, moto_port=0, smtp_port=0)
START_TIMEOUT = 180.0
# Each flooded phase starts this long before its first SOC ticket: past triage's burst (12 calls).
FLOOD_LEAD_SECONDS = 6.0
# After a flooded phase, the triage calls in flight (at most a ticket per worker) finish first.
DRAIN_SECONDS = 4.0
FLOOD_DOMAIN = "acme.example"
TENANT = "acme"
# Customer tickets, through RT's own Perl API in one transaction (bench/suite.py's seed_flood does
# the same for the bulk flood): about 15 tickets a second, against 4 through REST 2.
SEED_SCRIPT = """
use strict;
use warnings;
use RT -init;
use MIME::Entity;

my ($count, $domain) = @ARGV;
my $user = RT::CurrentUser->new(RT->SystemUser);
RT->DatabaseHandle->BeginTransaction;
for my $n (0 .. $count - 1) {
    my $ticket = RT::Ticket->new($user);
    my ($id, undef, $message) = $ticket->Create(
        Queue => 'support',
        Subject => "Portal down again $n",
        Requestor => ["flood-$n\\@$domain"],
        MIMEObj => MIME::Entity->build(
            Type => 'text/plain', Charset => 'UTF-8', Data => ["customer says: outage since 9:00 ($n)"]
        ),
    );
    unless ($id) {
        RT->DatabaseHandle->Rollback;
        die "ticket $n: $message\\n";
    }
    print "$id\\n";
}
RT->DatabaseHandle->Commit;
"""


@dataclass
class TicketFloodResult:
    flood_tickets: int
    soc_tickets: int
    triage_workers: int
    triage_share: bool
    quiet_seconds: list[float]
    flooded_seconds: list[float]
    quiet_p50: float
    flooded_p50: float
    ratio_p50: float
    quiet_p95: float
    flooded_p95: float
    triaged_during_flood: int
    flooded_phase_seconds: float
    triage_calls_per_second_estimate: float
    rate_limits: dict[str, Any]
    seed_seconds: float


def _connection(profile: Profile, store: str) -> dict[str, Any]:
    from devstack.request_tracker import rt_connection

    definition = dict(rt_connection(profile))
    definition["extra"] = json.dumps({**definition.pop("extra", {}), "rate_limit_store_dsn": store})
    return definition


def _hook(definition: dict[str, Any], *, share: str | None) -> Any:
    """An RT hook on the bench's connection (the cached_property filled: no secrets backend)."""
    from airflow.sdk import Connection

    from include.connectors.ticketing.request_tracker import RequestTrackerHook

    hook = RequestTrackerHook(tenant="platform", share=share)
    hook.__dict__["connection"] = Connection(conn_id="rt_default", **definition)
    return hook


def _triage_worker(
    definition: dict[str, Any], share: str | None, ids: Any, ready: Any, flooding: Any, stop: Any, done: Any
) -> None:
    from include.connectors.context import RunContext
    from include.triage.tickets import triage_ticket

    reader = _hook(definition, share=share)
    _ = reader.limiter, reader.session  # imports and clients built before the clock starts
    ready.put(os.getpid())
    triaged = 0
    while not stop.is_set():
        if not flooding.wait(0.1):  # a quiet phase: no new ticket
            continue
        try:
            ticket_id = ids.get(timeout=1)
        except queue.Empty:  # the flood is through
            break
        run = RunContext("bench_ticket_flood", "flood", "triage", "platform", "corr-bench-flood")
        triage_ticket(reader, str(ticket_id), run)
        triaged += 1
    done.put({"triaged": triaged})


def _soc_round(definition: dict[str, Any], count: int, tag: str) -> list[float]:
    from include.connectors.ticketing.request_tracker import RequestTrackerHook

    soc = _hook(definition, share=None).for_tenant(TENANT)
    assert isinstance(soc, RequestTrackerHook)
    seconds = []
    for n in range(count):
        began = time.perf_counter()
        soc.create_ticket(
            queue="soc",
            subject=f"Contain host {tag}-{n}",
            body="EDR alert: isolate the host",
            idempotency_key=f"bench-soc-{tag}-{n}-{uuid.uuid4().hex[:6]}",
            correlation_id=f"corr-bench-soc-{tag}-{n}",
        )
        seconds.append(time.perf_counter() - began)
    return seconds


def seed(tracker: Any, count: int) -> tuple[list[str], float]:
    """The flood's customer tickets, RT's server stopped; their ids and the seconds it took.

    The seeded database is kept next to RT's pristine copy (``rt5.flood-<count>.db``): the next run
    copies it back in milliseconds instead of creating the tickets again (about a minute for 500).
    """
    began = time.monotonic()
    cached = tracker.home / f"rt5.flood-{count}.db"
    listed = cached.with_suffix(".ids")
    if cached.exists() and listed.exists() and cached.stat().st_mtime >= tracker.pristine.stat().st_mtime:
        shutil.copyfile(cached, tracker.database)
        return listed.read_text().split(), time.monotonic() - began
    ids = tracker.create_tickets_with_perl(SEED_SCRIPT, str(count), FLOOD_DOMAIN, count=count)
    shutil.copyfile(tracker.database, cached)
    listed.write_text("\n".join(ids) + "\n")
    return ids, time.monotonic() - began


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))], 3)


def run(flood: int, soc: int, workers: int, *, share: bool, cycles: int = 5) -> TicketFloodResult:
    from devstack import redis
    from devstack.request_tracker import RequestTracker
    from include.connectors.ticketing.request_tracker import TRIAGE_SHARE

    os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="ticket-flood-bench-airflow-"))
    profile = BENCH_PROFILE
    tracker = RequestTracker(profile)
    redis.ensure_installed()
    redis.start(profile, fresh=True)
    try:
        tracker.prepare()
        tracker.stop()
        tracker.reset()  # stopped: the pristine database
        ids, seeded = seed(tracker, flood)
        tracker.start()
        definition = _connection(profile, redis.url(profile, redis.RATELIMIT_DB))
        _soc_round(definition, 3, "warm")

        spawn = multiprocessing.get_context("spawn")
        ids_queue, ready, done = spawn.Queue(), spawn.Queue(), spawn.Queue()
        flooding, stop = spawn.Event(), spawn.Event()
        for ticket_id in ids:
            ids_queue.put(ticket_id)
        procs = [
            spawn.Process(
                target=_triage_worker,
                args=(definition, TRIAGE_SHARE if share else None, ids_queue, ready, flooding, stop, done),
            )
            for _ in range(workers)
        ]
        for proc in procs:
            proc.start()
        for _ in procs:
            ready.get(timeout=START_TIMEOUT)
        # Quiet and flooded phases alternate, so whatever else the machine does weighs on both.
        quiet: list[float] = []
        flooded: list[float] = []
        flood_seconds = 0.0
        per_phase = max(1, soc // cycles)
        for cycle in range(cycles):
            quiet += _soc_round(definition, per_phase, f"quiet{cycle}")
            flooding.set()
            began = time.monotonic()
            time.sleep(FLOOD_LEAD_SECONDS)  # under way and past triage's burst
            flooded += _soc_round(definition, per_phase, f"flood{cycle}")
            flooding.clear()
            flood_seconds += time.monotonic() - began
            time.sleep(DRAIN_SECONDS)  # the tickets in flight finish: a quiet RT again
        stop.set()
        reports = [done.get(timeout=120) for _ in procs]
        elapsed = flood_seconds + cycles * DRAIN_SECONDS  # tickets in flight finish in the drains
        for proc in procs:
            proc.join(timeout=60)
        triaged = sum(r["triaged"] for r in reports)
        extras = json.loads(definition["extra"])
        return TicketFloodResult(
            flood_tickets=flood,
            soc_tickets=soc,
            triage_workers=workers,
            triage_share=share,
            quiet_seconds=[round(s, 3) for s in quiet],
            flooded_seconds=[round(s, 3) for s in flooded],
            quiet_p50=round(statistics.median(quiet), 3),
            flooded_p50=round(statistics.median(flooded), 3),
            ratio_p50=round(statistics.median(flooded) / statistics.median(quiet), 2),
            quiet_p95=_p(quiet, 0.95),
            flooded_p95=_p(flooded, 0.95),
            triaged_during_flood=triaged,
            flooded_phase_seconds=round(flood_seconds, 1),
            # triage's path: 2 reads, 1 update, the comment's search, post and read-back: 6 calls;
            # each flooded phase starts with the share's burst (12 calls) on top of its rate
            triage_calls_per_second_estimate=round(triaged * 6 / elapsed, 2),
            rate_limits={
                k: v for k, v in extras.items() if "rate_limit" in k and k != "rate_limit_store_dsn"
            },
            seed_seconds=round(seeded, 1),
        )
    finally:
        tracker.stop()
        redis.stop(profile)


def report(result: TicketFloodResult, path: Path = RESULTS) -> None:
    print(
        f"SOC ticket creation, {result.soc_tickets} tickets: quiet p50 {result.quiet_p50}s "
        f"p95 {result.quiet_p95}s; during the flood p50 {result.flooded_p50}s p95 {result.flooded_p95}s "
        f"-> ratio {result.ratio_p50} (goal <= 1.2)\n"
        f"flood: {result.flood_tickets} customer tickets ({result.seed_seconds}s to seed), "
        f"{result.triage_workers} triage workers, triage share {'on' if result.triage_share else 'OFF'}: "
        f"{result.triaged_during_flood} triaged in {result.flooded_phase_seconds}s of flooded phases "
        f"(~{result.triage_calls_per_second_estimate} triage calls/s, bursts included)\n"
        f"limits: {result.rate_limits}"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(asdict(result), indent=2) + "\n")
    print(f"written to {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flood", type=int, default=500, help="customer tickets in the flood")
    parser.add_argument("--soc", type=int, default=15, help="SOC tickets per condition")
    parser.add_argument("--cycles", type=int, default=5, help="quiet/flooded phase pairs")
    parser.add_argument("--triage-workers", type=int, default=4, help="triage processes (the pool's slots)")
    parser.add_argument(
        "--no-share", action="store_true", help="triage on the plain buckets (before issue 19)"
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    result = run(args.flood, args.soc, args.triage_workers, share=not args.no_share, cycles=args.cycles)
    report(result, args.output)


if __name__ == "__main__":
    main()
