"""The parts of TorchServe's config.properties that clients and probes need."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: TorchServe 0.12's default lifetime of the inference and management keys, in minutes
DEFAULT_TOKEN_LIFETIME_MIN = 60.0


def read_properties(path: str | Path) -> dict[str, str]:
    """key=value lines of a Java properties file (comments and blanks skipped)."""
    props = {}
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            props[key.strip()] = value.strip()
    return props


@dataclass(frozen=True)
class ServerAddresses:
    """Where a TorchServe started from one config.properties answers, and how long its keys live."""

    inference_url: str
    management_url: str
    metrics_url: str
    token_lifetime_min: float = DEFAULT_TOKEN_LIFETIME_MIN

    @classmethod
    def from_properties(cls, path: str | Path) -> "ServerAddresses":
        props = read_properties(path)
        return cls(
            inference_url=props.get("inference_address", "http://127.0.0.1:8080"),
            management_url=props.get("management_address", "http://127.0.0.1:8081"),
            metrics_url=props.get("metrics_address", "http://127.0.0.1:8082"),
            token_lifetime_min=float(props.get("token_expiration_min", DEFAULT_TOKEN_LIFETIME_MIN)),
        )
