"""TorchServe's token keys: read key_file.json, renew keys through the token API, keep them fresh.

Facts of TorchServe 0.12 this relies on (measured; see docs/operations.md ("Tokens")):
* ``key_file.json`` is written in the directory TorchServe was started from (mode 0600) and holds an
  inference and a management key, each with an ``"expiration time"`` (ISO-8601 UTC), and the API key,
  which never expires. It is deleted by ``torchserve --stop``.
* Keys live ``token_expiration_min`` minutes (config.properties; fractions allowed). An expired or
  wrong key is answered 400 ``InvalidKeyException``.
* ``GET <management>/token?type=inference|management`` with the API key issues a new key of that
  kind: the answer is empty, the new key is written to key_file.json, and the old one stops working
  at once. So exactly one process renews (`renew_forever`), and clients re-read the file and retry
  once when a key is refused (`harness.torchserve.TorchServe.request`, `ops.health`).

    python -m ops.keys renew --config config.properties --key-dir .   # the renewer `make serve` starts
    python -m ops.keys renew --config CONFIG --key-dir DIR            # beside a TorchServe started by hand in DIR
    python -m ops.keys show --key-dir DIR                             # how long each key has left
    python -m ops.keys renew-once --kinds inference --key-dir DIR     # a new key now (e.g. after a leak)

`renew` runs until stopped (SIGTERM; `make stop` / `python -m harness.torchserve stop` stop the one
`start` started). A TorchServe started by hand (`torchserve --start`) has no renewer: its keys expire after
token_expiration_min unless one runs beside it (under nohup or a service manager).
"""

from __future__ import annotations

import argparse
import datetime
import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from handler.errors import BertTrtError, run_cli
from ops.properties import ServerAddresses

KEY_FILE = "key_file.json"
#: the keys that expire; "API" (the key that renews them) does not
RENEWABLE_KINDS = ("inference", "management")
#: renew a key when less than this share of its lifetime is left
RENEW_AT_REMAINING_SHARE = 1 / 3


class KeyFileError(BertTrtError):
    """key_file.json is missing or unreadable: TorchServe not started from that folder, or token auth off."""


class KeyRenewalError(BertTrtError):
    """TorchServe's token API refused or did not answer a renewal."""


@dataclass(frozen=True)
class Key:
    """One key of key_file.json."""

    value: str
    #: None for the API key, which never expires
    expires_at: datetime.datetime | None

    def seconds_left(self, now: datetime.datetime | None = None) -> float:
        """Seconds until the key expires (infinite for the API key)."""
        if self.expires_at is None:
            return float("inf")
        return (self.expires_at - (now or datetime.datetime.now(datetime.timezone.utc))).total_seconds()


def parse_expiration(text: str) -> datetime.datetime:
    """Java's Instant.toString() (nanoseconds, trailing Z) as an aware datetime."""
    stamp = text.strip().rstrip("Z")
    seconds, _, fraction = stamp.partition(".")
    parsed = datetime.datetime.fromisoformat(seconds).replace(tzinfo=datetime.timezone.utc)
    return parsed + datetime.timedelta(microseconds=int((fraction + "000000")[:6]) if fraction else 0)


def read_keys(key_dir: str | Path) -> dict[str, Key]:
    """Every key of key_dir/key_file.json by kind ("inference", "management", "API")."""
    path = Path(key_dir) / KEY_FILE
    try:
        data = json.loads(path.read_text())
        return {
            kind: Key(entry["key"], parse_expiration(entry["expiration time"]) if "expiration time" in entry else None)
            for kind, entry in data.items()
        }
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise KeyFileError(f"cannot read {path} ({type(error).__name__}: {error}): is TorchServe running from {Path(key_dir).resolve()}?") from None


def read_key(key_dir: str | Path, kind: str = "inference", timeout: float = 30) -> str:
    """The key of `kind`, waiting up to `timeout` seconds for the file to appear (TorchServe writes it at start)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return read_keys(key_dir)[kind].value
        except (KeyFileError, KeyError):
            if time.monotonic() > deadline:
                raise KeyFileError(f"no {kind} key in {Path(key_dir) / KEY_FILE} after {timeout:.0f} s: is token authorization disabled, or TorchServe not started there?") from None
            time.sleep(0.2)


def is_key_refusal(status: int, body: str) -> bool:
    """True when TorchServe refused a request for its token (0.12 answers 400 InvalidKeyException)."""
    return status in (400, 401) and "InvalidKeyException" in body


def renew_key(management_url: str, key_dir: str | Path, kind: str, timeout: float = 10) -> str:
    """Ask TorchServe for a new key of `kind` with the API key; returns the new key (the old one is dead)."""
    if kind not in RENEWABLE_KINDS:
        raise KeyRenewalError(f"only {RENEWABLE_KINDS} keys can be renewed, not {kind!r}")
    keys = read_keys(key_dir)
    request = urllib.request.Request(f"{management_url}/token?type={kind}", headers={"Authorization": f"Bearer {keys['API'].value}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
    except urllib.error.HTTPError as error:
        raise KeyRenewalError(f"renewing the {kind} key: HTTP {error.code} {error.read()[:300]!r}") from None
    except OSError as error:
        raise KeyRenewalError(f"renewing the {kind} key: {management_url} does not answer ({error})") from None
    return read_keys(key_dir)[kind].value


def renew_due_keys(management_url: str, key_dir: str | Path, lifetime_min: float, kinds: tuple[str, ...] = RENEWABLE_KINDS) -> list[str]:
    """Renew each key of `kinds` with less than a third of its lifetime left; returns the kinds renewed."""
    margin_s = lifetime_min * 60 * RENEW_AT_REMAINING_SHARE
    keys = read_keys(key_dir)
    due = [kind for kind in kinds if keys[kind].seconds_left() < margin_s]
    for kind in due:
        renew_key(management_url, key_dir, kind)
    return due


def check_interval_s(lifetime_min: float) -> float:
    """Seconds between the renewer's looks at the key file: a twelfth of a key's life, within 1..30 s
    (30 s with the shipped 60-minute keys: a key is renewed within 30 s of reaching a third of its life)."""
    return max(1.0, min(30.0, lifetime_min * 60 / 12))


def renew_forever(management_url: str, key_dir: str | Path, lifetime_min: float, kinds: tuple[str, ...] = RENEWABLE_KINDS) -> None:
    """Keep the keys of `kinds` fresh until the process is stopped; survives TorchServe restarts and outages."""
    interval_s = check_interval_s(lifetime_min)
    while True:
        try:
            renewed = renew_due_keys(management_url, key_dir, lifetime_min, kinds)
            if renewed:
                print(f"{datetime.datetime.now().isoformat(timespec='seconds')} renewed {', '.join(renewed)} key", flush=True)
        except BertTrtError as error:  # server restarting or stopped: try again at the next tick
            print(f"{datetime.datetime.now().isoformat(timespec='seconds')} {error}", flush=True)
        time.sleep(interval_s)


def build_parser() -> argparse.ArgumentParser:
    """The command line of this module (main parses it)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["renew", "renew-once", "show"])
    parser.add_argument("--config", type=Path, default=Path("config.properties"), help="the config.properties TorchServe runs with")
    parser.add_argument("--key-dir", type=Path, default=Path("."), help="the folder TorchServe was started from (holds key_file.json)")
    parser.add_argument("--kinds", nargs="+", default=list(RENEWABLE_KINDS), choices=RENEWABLE_KINDS)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.command == "show":  # needs only the key file
        for kind, key in read_keys(args.key_dir).items():
            left = key.seconds_left()
            print(f"{kind}: {'never expires' if left == float('inf') else f'{left:.0f} s left'}")
        return
    if not Path(args.config).is_file():
        raise KeyFileError(f"{args.config} does not exist: pass --config, the config.properties TorchServe was started with (it names the management port)")
    server = ServerAddresses.from_properties(args.config)
    if args.command == "renew":
        renew_forever(server.management_url, args.key_dir, server.token_lifetime_min, tuple(args.kinds))
    else:
        for kind in args.kinds:
            renew_key(server.management_url, args.key_dir, kind)
        print(f"renewed: {', '.join(args.kinds)}")


if __name__ == "__main__":
    run_cli(main)
