"""The SLA of a workflow that holds something until a time it was given: counted from the hold's end.

Why. A domain's SLA is a Deadline Alert counted from when the run was queued
(:func:`include.workflows.factory.sla_deadline`). A run that holds a change until a given time
(``soc_block_indicator`` blocks a network until ``expires_at``, then removes the block itself) lasts
as long as the hold, so a block longer than the SOC ``infrastructure_change`` SLA (30 minutes)
always tripped the SLA alert, although nothing was late. For such a workflow the promise the SLA
stands for is "the hold ends on time": the run must be done within the SLA after the hold's end.

What. :class:`HoldEndDeadline`, a custom Deadline reference (Airflow's own mechanism, registered by
the plugin ``plugins/deadlines.py`` so that the API server and the scheduler, which create DAG runs,
can evaluate it): the later of the run's queue time and the hold's end, read from the run's conf
(the trigger form's param, already validated by the form's schema), but never later than the queue
time plus ``longest`` (the run's hard limit, ``dagrun_timeout``): a far-off or unreadable end does
not push the alert beyond the end of the run. The SLA interval is added by Airflow as for every
reference.

Evaluated once, when the run is created (Airflow's ``DAGRUN_CREATED`` references). A later change
of the hold (an extension by another run) does not move this run's deadline; the waiting step hands
the hold to the extending run instead of outliving its own deadline
(:class:`include.operators.perimeter.WaitForBlockExpiryOperator`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk.definitions.deadline import BaseDeadlineReference

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

log = logging.getLogger(__name__)


def hold_end(conf: Any, param: str) -> datetime | None:
    """The hold's end from a run's conf: an ISO 8601 time with a time zone, else ``None``.

    :param conf: the DAG run's conf (the trigger form's values).
    :param param: the name of the param holding the end.
    """
    value = conf.get(param) if isinstance(conf, dict) else None
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.astimezone(UTC) if moment.tzinfo is not None else None


def deadline_base(queued: datetime, end: datetime | None, longest: timedelta) -> datetime:
    """Where the SLA interval starts: the later of ``queued`` and ``end``, at most ``queued + longest``.

    :param queued: when the run was queued (or created).
    :param end: the hold's end, or ``None`` when the conf names none.
    :param longest: the run's hard limit (``dagrun_timeout``).
    """
    if end is None or end <= queued:
        return queued
    return min(end, queued + longest)


@dataclass
class HoldEndDeadline(BaseDeadlineReference):
    """Deadline reference: the hold's end (the run conf's ``param``), bounded by ``longest_seconds``.

    :param param: the trigger-form param holding the hold's end (ISO 8601 with a time zone).
    :param longest_seconds: the run's hard limit in seconds: the reference is never later than
        the queue time plus this.
    """

    param: str = "expires_at"
    longest_seconds: float = 4 * 3600.0

    required_kwargs: ClassVar[set[str]] = {"dag_id", "run_id"}

    def serialize_reference(self) -> dict[str, Any]:
        return {
            "reference_type": self.reference_name,
            "param": self.param,
            "longest_seconds": self.longest_seconds,
        }

    @classmethod
    def deserialize_reference(cls, reference_data: dict[str, Any]) -> HoldEndDeadline:
        return cls(
            param=str(reference_data.get("param", "expires_at")),
            longest_seconds=float(reference_data.get("longest_seconds", 4 * 3600.0)),
        )

    def _evaluate_with(self, *, session: Session, **kwargs: Any) -> datetime | None:
        from airflow.models import DagRun
        from sqlalchemy import select

        row = session.execute(
            select(DagRun.conf, DagRun.queued_at, DagRun.run_after).where(
                DagRun.dag_id == kwargs["dag_id"], DagRun.run_id == kwargs["run_id"]
            )
        ).one_or_none()
        if row is None:
            log.warning("HoldEndDeadline: no DAG run %s/%s", kwargs["dag_id"], kwargs["run_id"])
            return None
        conf, queued_at, run_after = row
        queued = queued_at or run_after or datetime.now(UTC)
        return deadline_base(queued, hold_end(conf, self.param), timedelta(seconds=self.longest_seconds))
