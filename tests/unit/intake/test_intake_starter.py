"""TaskSdkStarter: what the Execution API answers becomes started / duplicate / refused / transient."""

from __future__ import annotations

from typing import Any

import pytest
from airflow.sdk.exceptions import ErrorType
from airflow.sdk.execution_time import task_runner
from airflow.sdk.execution_time.comms import ErrorResponse, OKResponse, TriggerDagRun

from include.intake.events import Start
from include.intake.starter import StartRefused, TaskSdkStarter

START = Start(workflow="soc_contain_host", run_id="intake__siem-alerts__A-1", conf={"host": "i-01234567"})


class Comms:
    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.sent: list[Any] = []

    def send(self, message: Any) -> Any:
        self.sent.append(message)
        return self.answer


def api_error(status: int, reason: str | None) -> ErrorResponse:
    inner = {"detail": {"reason": reason, "message": "No value passed"}} if reason else {"detail": "boom"}
    return ErrorResponse(error=ErrorType.API_SERVER_ERROR, detail={"status_code": status, "detail": inner})


@pytest.fixture
def comms(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Comms:
    fake = Comms(request.param)
    monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", fake, raising=False)
    return fake


@pytest.mark.parametrize("comms", [OKResponse(ok=True)], indirect=True)
def test_a_new_run_is_started_with_its_run_id_and_conf(comms: Comms) -> None:
    assert TaskSdkStarter().start(START) == "started"
    [sent] = comms.sent
    assert isinstance(sent, TriggerDagRun)
    assert (sent.dag_id, sent.run_id, sent.conf) == (START.workflow, START.run_id, START.conf)
    assert not sent.reset_dag_run  # an existing run is never cleared


@pytest.mark.parametrize("comms", [ErrorResponse(error=ErrorType.DAGRUN_ALREADY_EXISTS)], indirect=True)
def test_an_existing_run_id_is_a_duplicate(comms: Comms) -> None:
    assert TaskSdkStarter().start(START) == "duplicate"


@pytest.mark.parametrize("comms", [api_error(400, "value_error")], indirect=True)
def test_params_refused_by_the_dag_are_final(comms: Comms) -> None:
    with pytest.raises(StartRefused, match="soc_contain_host refused the run \\(value_error\\)"):
        TaskSdkStarter().start(START)


@pytest.mark.parametrize("comms", [api_error(404, "not_found"), api_error(500, None)], indirect=True)
def test_other_errors_are_transient(comms: Comms) -> None:
    with pytest.raises(RuntimeError, match="starting soc_contain_host run"):
        TaskSdkStarter().start(START)
