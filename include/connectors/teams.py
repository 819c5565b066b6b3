"""Microsoft Teams: post an Adaptive Card to a channel through its webhook (incoming webhook or a
Teams Workflows "When a Teams webhook request is received" URL).

The webhook URL is the credential: whoever has it posts into the channel. So the Airflow connection
keeps it split: ``host`` is the origin (``https://<tenant>.webhook.office.com`` or the Workflows
``https://prod-NN.<region>.logic.azure.com:443``), ``password`` the rest of the URL (path and query,
the token or ``sig=`` included), which Airflow's secrets masker hides in every log. Errors and logs
name the request "teams webhook", never its path.

Answers: the incoming webhook says 200 with the text ``1``; a Workflows URL 202 with no body. The
classic webhook also answers 200 with an error text (``Microsoft Teams endpoint returned HTTP error
429 ...``) when throttled: that is a transient failure, retried like a 429. 400 (a card Teams refuses)
and 404 (the webhook was removed) are permanent. Retries, ``Retry-After`` and rate limits are the
connector base's (:class:`~include.connectors.base.HttpConnectorHook`).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from typing import Any, ClassVar

from include.connectors.base import HttpConnectorHook
from include.connectors.errors import PermanentError, TransientError

CARD_CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"
LABEL = "teams webhook"


def card_message(card: Mapping[str, Any]) -> dict[str, Any]:
    """The webhook message carrying one Adaptive Card."""
    return {"type": "message", "attachments": [{"contentType": CARD_CONTENT_TYPE, "content": dict(card)}]}


class TeamsWebhookHook(HttpConnectorHook):
    """One Teams channel's webhook.

    :param conn_id: the channel's connection (``host`` = origin, ``password`` = the URL's secret rest).
    :param tenant: whose rate-limit bucket the posts draw from.
    """

    system: ClassVar[str] = "teams"
    default_conn_name = "teams_default"
    hook_name = "Microsoft Teams webhook"

    @cached_property
    def webhook_path(self) -> str:
        path = str(self.connection.password or "")
        if not path.startswith("/"):
            raise PermanentError(
                f"connection {self.conn_id!r}: password must hold the webhook URL's path (starting with /)",
                system=self.system,
                operation="configure",
            )
        return path

    def auth_headers(self) -> dict[str, str]:
        return {}  # the URL is the credential

    def path_label(self, path: str) -> str:
        return LABEL

    def post_card(self, card: Mapping[str, Any]) -> int:
        """Post ``card`` (an Adaptive Card's ``content``) to the channel; return the HTTP status.

        :raises PermanentError: a refused card or a webhook that no longer exists.
        :raises RetryBudgetExhausted: still failing after the connection's retries.
        """
        message = card_message(card)

        def send() -> int:
            response = self._send(
                "POST", self.webhook_path, operation="post_card", expect=(200, 202), json=message
            )
            text = response.text.strip()
            if response.status_code == 200 and text not in ("", "1"):
                # The classic connector's in-band failure; throttling included ("HTTP error 429").
                error = (
                    TransientError if "HTTP error 429" in text or "HTTP error 5" in text else PermanentError
                )
                raise error(
                    f"POST {LABEL} -> 200 with error: {text[:200]}", system=self.system, operation="post_card"
                )
            return int(response.status_code)

        return self.call("post_card", send)
