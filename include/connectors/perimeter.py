"""Perimeter blocks with an expiry: an IP address or CIDR in the tenant's AWS WAFv2 block list.

:class:`PerimeterHook` is the hook of the SOC's ``soc_block_indicator`` workflow:
``perimeter-inspect`` (read-only) to plan and to time a block, ``perimeter-block`` (privileged) to
add and remove it, each a capability role in the tenant's own account
(:class:`~include.connectors.aws.AwsCapabilityHook`).

Where things live, per tenant account (provisioned with the tenant; devstack: ``devstack/aws_seed.py``):

- the block lists: two REGIONAL WAFv2 IP sets, ``orchestrator-<tenant>-blocklist-ipv4`` and
  ``-ipv6`` (an IP set holds one address family), which the tenant's web ACLs reference in a block
  rule, each with its id in the SSM parameter ``/orchestrator/<tenant>/perimeter/blocklist-ipv4``
  (``-ipv6``): WAF has no lookup by name and ``wafv2:ListIPSets`` cannot be scoped to an ARN, so
  the roles read the id rather than list every IP set of the account. One entry per blocked
  network, written with the IP set's ``LockToken`` (optimistic locking: a concurrent writer makes
  the update fail, and it is re-read and retried, never overwritten);
- the expiry of each block: the SSM parameter ``/orchestrator/<tenant>/perimeter-block/<key>``
  (``<key>``: the network with ``:`` -> ``-`` and ``/`` -> ``_``), a JSON record of the latest
  expiry, the run that set it and its correlation id. It is written before the entry is added, so
  a block never exists without its expiry.

Re-runs extend, never duplicate (SCALE-3): :meth:`PerimeterHook.block` keeps the later of the
recorded and the requested expiry and adds the entry only if it is missing;
:meth:`PerimeterHook.unblock` removes the entry only once the recorded expiry has passed, so a
run whose wait ends finds a later expiry and leaves the block to the run that set it. If an
extension is recorded while a removal is under way, the removal puts the entry back.

Domains are refused: a WAF IP set matches the client address of a request to the tenant's own
services; it cannot stop traffic to a domain. Blocking a domain needs a DNS-level control (Route 53
Resolver DNS Firewall), which is not built here.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any, ClassVar, Final

from botocore.exceptions import ClientError

from include.connectors.aws import NO_BOTOCORE_RETRIES, AwsCapabilityHook, capability_client, error_code

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

SCOPE: Final = "REGIONAL"
BLOCKLIST_NAME: Final = "orchestrator-{tenant}-blocklist-ipv{version}"
# Where the tenant's provisioning records each block list's id: WAF has no get-by-name, and
# ListIPSets cannot be scoped to an ARN, so the roles read the id here instead of listing.
BLOCKLIST_PARAMETER: Final = "/orchestrator/{tenant}/perimeter/blocklist-ipv{version}"
EXPIRY_PARAMETER: Final = "/orchestrator/{tenant}/perimeter-block/{key}"
# The widest network one block may cover: a /8 typed by mistake must not cut off a continent.
MIN_PREFIX: Final = {4: 16, 6: 48}
LOCK_ATTEMPTS: Final = 5
_LOCK_CONFLICT: Final = "WAFOptimisticLockException"
_HOSTNAME: Final = re.compile(r"(?=.{1,253}$)([A-Za-z0-9-]{1,63}\.)+[A-Za-z][A-Za-z0-9-]{1,62}\.?")


class PerimeterError(RuntimeError):
    """A perimeter block cannot be done as asked; the message says what and where."""


# --- validation, before any side effect ----------------------------------------------------------


def check_indicator(indicator: str) -> Network:
    """The network an indicator names: one public IPv4/IPv6 address or a CIDR no wider than allowed.

    :param indicator: ``203.0.113.7``, ``203.0.113.0/24``, ``2001:db8::/48`` (v6: at most /48, v4: /16).
    :raises PerimeterError: a domain, a malformed address or CIDR, a CIDR with host bits set, one
        too wide, or a private, reserved, loopback, link-local, multicast or documentation range.
    """
    if not isinstance(indicator, str) or not indicator.strip():
        raise PerimeterError(f"indicator {indicator!r}: empty; give an IPv4/IPv6 address or CIDR")
    text = indicator.strip()
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        if _HOSTNAME.fullmatch(text):
            raise PerimeterError(
                f"indicator {text!r} is a domain: a WAF IP set blocks client addresses only and cannot "
                "block a domain (that needs DNS Firewall, not built); give the IP address or CIDR"
            ) from None
        raise PerimeterError(
            f"indicator {text!r} is not an IPv4/IPv6 address or CIDR (e.g. 198.51.100.7 or 2001:db8::/48)"
        ) from None
    if "/" in text and _strict(text) is None:
        raise PerimeterError(
            f"indicator {text!r} has host bits set; did you mean {network}? (a CIDR names its network)"
        )
    minimum = MIN_PREFIX[network.version]
    if network.prefixlen < minimum:
        raise PerimeterError(
            f"indicator {text!r} is too wide: /{network.prefixlen} covers {network.num_addresses} "
            f"addresses; an IPv{network.version} block may be at most /{minimum}"
        )
    if not network.is_global or network.is_multicast or network.is_reserved:
        raise PerimeterError(
            f"indicator {text!r} is not a public (globally routed) range: private, reserved, "
            "loopback, link-local, multicast and documentation ranges are never blocked at the perimeter"
        )
    return network


def _strict(text: str) -> Network | None:
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError:
        return None


def parse_expiry(expires_at: str | datetime) -> datetime:
    """``expires_at`` as an aware UTC datetime.

    :param expires_at: ISO 8601 with a time zone (``2026-12-07T08:00:00Z``), or an aware datetime.
    :raises PerimeterError: not ISO 8601, or without a time zone.
    """
    if isinstance(expires_at, datetime):
        moment = expires_at
    else:
        try:
            moment = datetime.fromisoformat(str(expires_at).strip())
        except ValueError:
            raise PerimeterError(
                f"expires_at {expires_at!r} is not an ISO 8601 date-time (e.g. 2026-12-07T08:00:00Z)"
            ) from None
    if moment.tzinfo is None:
        raise PerimeterError(f"expires_at {expires_at!r} has no time zone (add Z or +01:00)")
    return moment.astimezone(UTC)


def check_expiry(expires_at: str | datetime, *, now: datetime, maximum: timedelta) -> datetime:
    """The expiry, if it is in the future and within ``maximum`` of ``now``.

    :param expires_at: ISO 8601 with a time zone, or an aware datetime.
    :param now: the moment to check against (aware).
    :param maximum: the policy's longest block.
    :raises PerimeterError: malformed, in the past, or beyond the maximum.
    """
    moment = parse_expiry(expires_at)
    if moment <= now:
        raise PerimeterError(
            f"expires_at {moment.isoformat()} is in the past (now {now.astimezone(UTC).isoformat()}): "
            "nothing to block"
        )
    if moment > now + maximum:
        raise PerimeterError(
            f"expires_at {moment.isoformat()} is beyond the policy maximum of {maximum} from now "
            f"(latest {(now + maximum).astimezone(UTC).isoformat()}); re-run before it expires to extend"
        )
    return moment


def blocklist_name(tenant: str, network: Network) -> str:
    """The tenant's WAF IP set for the network's address family."""
    return BLOCKLIST_NAME.format(tenant=tenant, version=network.version)


def blocklist_parameter(tenant: str, network: Network) -> str:
    """The SSM parameter holding the id of the tenant's WAF IP set for the network's family."""
    return BLOCKLIST_PARAMETER.format(tenant=tenant, version=network.version)


def expiry_parameter(tenant: str, network: Network) -> str:
    """The SSM parameter holding the block's expiry (SSM names allow ``[A-Za-z0-9_.-/]``)."""
    key = str(network).replace(":", "-").replace("/", "_")
    return EXPIRY_PARAMETER.format(tenant=tenant, key=key)


# --- what is recorded and planned -----------------------------------------------------------------


@dataclass(frozen=True)
class Expiry:
    """The recorded expiry of a block: when, set by which run, and the parameter's version."""

    expires_at: datetime
    run_id: str
    correlation_id: str
    version: int

    def as_xcom(self) -> dict[str, Any]:
        return {**asdict(self), "expires_at": self.expires_at.isoformat()}


@dataclass(frozen=True)
class BlockPlan:
    """What blocking a network changes: the IP set, whether it is there already, its expiry."""

    indicator: str  # the network, normalised (203.0.113.7/32)
    ip_set: str
    ip_set_arn: str
    entries: int
    blocked: bool
    expiry: Expiry | None

    def as_xcom(self) -> dict[str, Any]:
        return {**asdict(self), "expiry": self.expiry.as_xcom() if self.expiry else None}

    def markdown(self, expires_at: datetime | None = None) -> str:
        until = f" until **{expires_at.isoformat()}**" if expires_at else ""
        if self.blocked and self.expiry is not None:
            return (
                f"**{self.indicator}** is already blocked in WAF IP set `{self.ip_set}` until "
                f"{self.expiry.expires_at.isoformat()} (run {self.expiry.run_id}); approving extends "
                f"the block{until} if that is later, and never adds a second entry."
            )
        if self.blocked:
            return (
                f"**{self.indicator}** is already in WAF IP set `{self.ip_set}` without a recorded "
                f"expiry (added outside the orchestrator); approving records an expiry{until}, after "
                "which the entry is removed."
            )
        return (
            f"Block **{self.indicator}**{until}: add it to WAF IP set `{self.ip_set}` "
            f"({self.entries} entries now). At the expiry the run removes it by itself."
        )


class PerimeterHook(AwsCapabilityHook):
    """WAFv2 block lists and their expiries in a tenant's account (see the module docstring).

    :param aws_conn_id: the Airflow AWS connection (base credentials, endpoints); default ``aws_default``.
    :param capability: ``perimeter-inspect`` (read-only) or ``perimeter-block``.
    :param tenant: the tenant whose account holds the block lists.
    :param run_context: the run making the calls; default: the running task's.
    """

    system: ClassVar[str] = "wafv2"
    service: ClassVar[str] = "wafv2"
    hook_name = "WAF perimeter block"

    @cached_property
    def ssm(self) -> Any:
        """An SSM client on the same capability role (the expiry records)."""
        return capability_client(
            self.capability,
            self.tenant,
            "ssm",
            run_context=self.run_context,
            aws_conn_id=self.conn_id,
            config=NO_BOTOCORE_RETRIES,
        )

    # --- read-only ---------------------------------------------------------------------------

    def plan_block(self, indicator: str) -> BlockPlan:
        """What blocking ``indicator`` would change (read-only).

        :param indicator: an IP address or CIDR (:func:`check_indicator`).
        :raises PerimeterError: a bad indicator, or the tenant has no block list for its family.
        """
        network = check_indicator(indicator)
        ip_set = self._ip_set(network)
        addresses = _networks(ip_set["Addresses"])
        return BlockPlan(
            indicator=str(network),
            ip_set=ip_set["Name"],
            ip_set_arn=ip_set["ARN"],
            entries=len(addresses),
            blocked=network in addresses,
            expiry=self._expiry(network),
        )

    def expiry(self, indicator: str) -> Expiry | None:
        """The recorded expiry of the block of ``indicator``; ``None`` when none is recorded.

        :param indicator: an IP address or CIDR.
        """
        return self._expiry(check_indicator(indicator))

    # --- changes -----------------------------------------------------------------------------

    def block(self, indicator: str, expires_at: datetime) -> dict[str, Any]:
        """Block ``indicator`` until ``expires_at``, or later if a later expiry is recorded.

        The expiry record first, the IP set entry second (only if missing). A repeat leaves one entry
        and one record; the record keeps the later expiry (an earlier one never shortens a block).

        :param indicator: an IP address or CIDR.
        :param expires_at: the requested expiry (aware).
        :return: ``indicator``, ``ip_set``, ``added``, ``expires_at`` (in force), ``requested_expires_at``,
            ``previous_expires_at``, ``extended`` and ``correlation_id``.
        :raises PerimeterError: a bad indicator, a missing block list, a lock conflict that persists.
        """
        network = check_indicator(indicator)
        requested = parse_expiry(expires_at)
        ip_set = self._ip_set(network)
        previous = self._expiry(network)
        effective = requested if previous is None else max(previous.expires_at, requested)
        if previous is None or effective != previous.expires_at:
            self._record(network, effective)
        added = self._change(ip_set, network, add=True)
        return {
            "indicator": str(network),
            "ip_set": ip_set["Name"],
            "ip_set_arn": ip_set["ARN"],
            "added": added,
            "expires_at": effective.isoformat(),
            "requested_expires_at": requested.isoformat(),
            "previous_expires_at": previous.expires_at.isoformat() if previous else None,
            "extended": previous is not None and effective > previous.expires_at,
            "correlation_id": self.run_context.correlation_id,
        }

    def unblock(self, indicator: str, *, now: datetime) -> dict[str, Any]:
        """Remove the block of ``indicator`` if its recorded expiry has passed; otherwise change nothing.

        :param indicator: an IP address or CIDR.
        :param now: the present (aware); a recorded expiry after it means a later run extended the block.
        :return: ``indicator``, ``ip_set``, ``removed``, ``outcome`` (``removed``, ``already-removed``,
            ``extended``) and ``expires_at`` (the recorded one, if any).
        """
        network = check_indicator(indicator)
        ip_set = self._ip_set(network)
        recorded = self._expiry(network)
        result = {"indicator": str(network), "ip_set": ip_set["Name"], "ip_set_arn": ip_set["ARN"]}
        if recorded is not None and recorded.expires_at > now:
            return {
                **result,
                "removed": False,
                "outcome": "extended",
                "expires_at": recorded.expires_at.isoformat(),
            }
        removed = self._change(ip_set, network, add=False)
        again = self._expiry(network)
        if (
            again is not None
            and (recorded is None or again.version != recorded.version)
            and again.expires_at > now
        ):
            # Extended while we removed: the extending run expects the entry; put it back.
            self._change(self._ip_set(network), network, add=True)
            return {
                **result,
                "removed": False,
                "outcome": "extended",
                "expires_at": again.expires_at.isoformat(),
            }
        if again is not None:
            self._delete_record(network)
        return {
            **result,
            "removed": removed,
            "outcome": "removed" if removed else "already-removed",
            "expires_at": recorded.expires_at.isoformat() if recorded else None,
        }

    # --- WAF ---------------------------------------------------------------------------------

    def _ip_set(self, network: Network) -> dict[str, Any]:
        name = blocklist_name(self.tenant, network)
        locator = blocklist_parameter(self.tenant, network)
        missing = (
            f"tenant {self.tenant} has no WAF IP set {name} ({SCOPE}) recorded in its account "
            f"(SSM parameter {locator}): the block lists are provisioned with the tenant"
        )
        try:
            ip_set_id = self._ssm_call("get_parameter", lambda: self.ssm.get_parameter(Name=locator))
        except ClientError as error:
            if error_code(error) == "ParameterNotFound":
                raise PerimeterError(missing) from None
            raise
        try:
            answer = self.call(
                "get_ip_set",
                lambda: self.client.get_ip_set(Name=name, Scope=SCOPE, Id=ip_set_id["Parameter"]["Value"]),
            )
        except ClientError as error:
            if error_code(error) == "WAFNonexistentItemException":
                raise PerimeterError(missing) from None
            raise
        ip_set: dict[str, Any] = {**answer["IPSet"], "LockToken": answer["LockToken"]}
        return ip_set

    def _change(self, ip_set: dict[str, Any], network: Network, *, add: bool) -> bool:
        """Add or remove one entry with the IP set's lock token; re-read and retry on a conflict."""
        for _ in range(LOCK_ATTEMPTS):
            addresses = ip_set["Addresses"]
            present = network in _networks(addresses)
            if present == add:
                return False
            kept = [a for a in addresses if _network(a) != network]
            wanted = [*addresses, str(network)] if add else kept
            try:
                self._update(ip_set, wanted)
                return True
            except ClientError as error:
                if error_code(error) != _LOCK_CONFLICT:
                    raise
            ip_set = self._ip_set(network)
        raise PerimeterError(
            f"WAF IP set {ip_set['Name']}: changed by someone else {LOCK_ATTEMPTS} times in a row "
            f"while {'adding' if add else 'removing'} {network}; try again"
        )

    def _update(self, ip_set: dict[str, Any], addresses: list[str]) -> None:
        def update() -> Any:
            return self.client.update_ip_set(
                Name=ip_set["Name"],
                Scope=SCOPE,
                Id=ip_set["Id"],
                Addresses=addresses,
                Description=ip_set.get("Description") or "Blocked by the orchestrator",
                LockToken=ip_set["LockToken"],
            )

        self.call("update_ip_set", update)

    # --- SSM: the expiry records -------------------------------------------------------------

    def _expiry(self, network: Network) -> Expiry | None:
        name = expiry_parameter(self.tenant, network)
        try:
            answer = self._ssm_call("get_parameter", lambda: self.ssm.get_parameter(Name=name))
        except ClientError as error:
            if error_code(error) == "ParameterNotFound":
                return None
            raise
        parameter = answer["Parameter"]
        try:
            value = json.loads(parameter["Value"])
            return Expiry(
                expires_at=parse_expiry(value["expires_at"]),
                run_id=str(value.get("run_id", "")),
                correlation_id=str(value.get("correlation_id", "")),
                version=int(parameter.get("Version", 0)),
            )
        except (ValueError, KeyError, TypeError, PerimeterError):
            raise PerimeterError(
                f"the expiry record {name} of tenant {self.tenant} is not a JSON object with expires_at; "
                "fix or delete it"
            ) from None

    def _record(self, network: Network, expires_at: datetime) -> None:
        name = expiry_parameter(self.tenant, network)
        value = json.dumps(
            {
                "indicator": str(network),
                "expires_at": expires_at.isoformat(),
                "run_id": self.run_context.run_id,
                "correlation_id": self.run_context.correlation_id,
            },
            sort_keys=True,
        )

        def put() -> Any:
            return self.ssm.put_parameter(
                Name=name,
                Value=value,
                Type="String",
                Overwrite=True,
                Description=f"Expiry of the perimeter block of {network} (orchestrator)",
            )

        self._ssm_call("put_parameter", put)

    def _delete_record(self, network: Network) -> None:
        name = expiry_parameter(self.tenant, network)
        try:
            self._ssm_call("delete_parameter", lambda: self.ssm.delete_parameter(Name=name))
        except ClientError as error:
            if error_code(error) != "ParameterNotFound":
                raise

    def _ssm_call(self, operation: str, function: Callable[[], Any]) -> Any:
        return self.call(f"ssm.{operation}", function)


def _network(address: str) -> Network | None:
    try:
        return ipaddress.ip_network(address, strict=False)
    except ValueError:
        return None


def _networks(addresses: list[str]) -> set[Network]:
    return {n for a in addresses if (n := _network(a)) is not None}
