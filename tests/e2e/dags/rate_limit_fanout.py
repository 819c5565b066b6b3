"""
### Rate-limit fan-out (end-to-end test DAG of the distributed setup)

`calls` requests from each of `tasks` mapped tasks to the service behind connection `conn_id`,
all through the connector base, so all of them draw permits from the one shared bucket of that
connection (Redis in the distributed setup) whichever Celery worker runs them. Each task reports
the worker it ran on (its log-server port, which differs per worker on one machine).
"""

import os

from airflow.sdk import Param, get_current_context, task

from include.workflows import domain_workflow


@domain_workflow(
    domain="support",
    dag_id="e2e_rate_limit_fanout",
    doc_md=__doc__,
    params={
        "conn_id": Param("fault_server", type="string"),
        "tasks": Param(8, type="integer", minimum=1, maximum=32),
        "calls": Param(10, type="integer", minimum=1, maximum=200),
    },
)
def rate_limit_fanout():
    @task
    def slots() -> list[int]:
        return list(range(int(get_current_context()["params"]["tasks"])))

    @task(retries=0)
    def call(slot: int) -> dict:
        from include.connectors.base import HttpConnectorHook
        from include.connectors.errors import ConnectorError

        class FanoutHook(HttpConnectorHook):
            system = "fanout"

            def auth_headers(self) -> dict[str, str]:
                return {}

        params = get_current_context()["params"]
        hook = FanoutHook(params["conn_id"], tenant="acme")
        failed = 0
        for number in range(int(params["calls"])):
            try:
                hook.request("GET", f"/fanout/{slot}/{number}", operation="fanout_call")
            except ConnectorError:
                failed += 1
        return {
            "slot": slot,
            "failed": failed,
            "retries": hook.retry_count,
            "worker_log_port": os.environ.get("AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"),
        }

    call.expand(slot=slots())


rate_limit_fanout()
