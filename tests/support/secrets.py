"""A tenant account's Secrets Manager as the capability client returns it, for unit tests."""

from __future__ import annotations


class FakeSecrets:
    """Secrets Manager of one account: the values it holds, and every secret id asked for, in order."""

    class exceptions:
        class ResourceNotFoundException(Exception):
            pass

    def __init__(self, values: dict[str, str]) -> None:
        self.values = values
        self.asked: list[str] = []

    def get_secret_value(self, SecretId: str) -> dict[str, str]:
        self.asked.append(SecretId)
        if SecretId not in self.values:
            raise self.exceptions.ResourceNotFoundException(SecretId)
        return {"SecretString": self.values[SecretId]}
