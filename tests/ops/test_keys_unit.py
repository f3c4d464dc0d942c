"""key_file.json parsing and the renewal decision, without a server."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

import pytest

from ops.keys import KeyFileError, is_key_refusal, parse_expiration, read_keys


def write_key_file(directory, inference_left_s: float, management_left_s: float) -> None:
    now = datetime.datetime.now(datetime.timezone.utc)
    stamp = lambda seconds: (now + datetime.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%f123Z")  # noqa: E731  nanoseconds, as Java writes
    data = {
        "management": {"key": "M", "expiration time": stamp(management_left_s)},
        "inference": {"key": "I", "expiration time": stamp(inference_left_s)},
        "API": {"key": "A"},
    }
    (directory / "key_file.json").write_text(json.dumps(data))


def test_java_instant_with_nanoseconds_parses_as_utc():
    parsed = parse_expiration("2026-11-26T12:35:25.223248537Z")
    assert parsed == datetime.datetime(2026, 11, 26, 12, 35, 25, 223248, tzinfo=datetime.timezone.utc)


def test_read_keys_gives_values_and_time_left(tmp_path):
    write_key_file(tmp_path, inference_left_s=100, management_left_s=-5)
    keys = read_keys(tmp_path)
    assert (keys["inference"].value, keys["management"].value, keys["API"].value) == ("I", "M", "A")
    assert 95 < keys["inference"].seconds_left() <= 100
    assert keys["management"].seconds_left() < 0
    assert keys["API"].seconds_left() == float("inf")


def test_missing_key_file_says_where_it_looked(tmp_path):
    with pytest.raises(KeyFileError, match="key_file.json"):
        read_keys(tmp_path)


def test_only_invalid_key_answers_count_as_refusals():
    assert is_key_refusal(400, '{"code": 400, "type": "InvalidKeyException", "message": "Token Authorization failed."}')
    assert not is_key_refusal(400, '{"error": "text is empty", "code": 400}')
    assert not is_key_refusal(200, "InvalidKeyException")


class FakeTokenApi:
    """TorchServe's token API in miniature: GET /token?type=KIND with the API key writes a fresh KIND key
    (60 minutes left) into key_file.json, as TorchServe 0.12 does; records the kinds asked for."""

    def __init__(self, key_dir):
        import http.server
        import threading
        import urllib.parse

        self.renewed: list[str] = []
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                kind = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)["type"][0]
                authorized = self.headers.get("Authorization") == "Bearer A"
                if authorized:
                    data = json.loads((key_dir / "key_file.json").read_text())
                    stamp = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=60)
                    data[kind] = {"key": f"{kind}-new", "expiration time": stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}
                    (key_dir / "key_file.json").write_text(json.dumps(data))
                    api.renewed.append(kind)
                self.send_response(200 if authorized else 400)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def token_api(tmp_path):
    api = FakeTokenApi(tmp_path)
    yield api
    api.close()


def test_a_key_is_renewed_once_a_third_of_its_life_is_left(tmp_path, token_api):
    """60-minute keys (the shipped config): 21 minutes left is not yet due, 19 minutes left is (renewed at 40 minutes)."""
    from ops.keys import renew_due_keys

    write_key_file(tmp_path, inference_left_s=21 * 60, management_left_s=19 * 60)
    assert renew_due_keys(token_api.url, tmp_path, lifetime_min=60) == ["management"]
    assert token_api.renewed == ["management"]
    keys = read_keys(tmp_path)
    assert keys["management"].value == "management-new" and keys["management"].seconds_left() > 59 * 60
    assert keys["inference"].value == "I"  # not due: untouched
    assert renew_due_keys(token_api.url, tmp_path, lifetime_min=60) == []  # both fresh now


def test_an_expired_key_is_renewed_with_the_api_key(tmp_path, token_api):
    from ops.keys import renew_due_keys

    write_key_file(tmp_path, inference_left_s=-30, management_left_s=-30)
    assert renew_due_keys(token_api.url, tmp_path, lifetime_min=60) == ["inference", "management"]
    assert all(key.seconds_left() > 0 for key in read_keys(tmp_path).values())


def test_the_renewer_looks_every_30_s_with_shipped_keys_and_often_enough_with_short_ones():
    """A key is renewed between a third of its life left and that minus one check interval: never late."""
    from ops.keys import RENEW_AT_REMAINING_SHARE, check_interval_s
    from ops.properties import ServerAddresses

    shipped = ServerAddresses.from_properties(Path(__file__).resolve().parents[2] / "config.properties").token_lifetime_min
    assert shipped == 60  # docs/operations.md ("Tokens"): 60-minute keys, chosen on purpose
    assert check_interval_s(shipped) == 30.0
    for lifetime_min in (0.5, 1, 5, 60, 24 * 60):
        assert check_interval_s(lifetime_min) < lifetime_min * 60 * RENEW_AT_REMAINING_SHARE


def test_renewal_refused_or_unanswered_says_why(tmp_path, token_api):
    from ops.keys import KeyRenewalError, renew_key

    write_key_file(tmp_path, inference_left_s=10, management_left_s=10)
    data = json.loads((tmp_path / "key_file.json").read_text())
    data["API"]["key"] = "wrong"
    (tmp_path / "key_file.json").write_text(json.dumps(data))
    with pytest.raises(KeyRenewalError, match="HTTP 400"):
        renew_key(token_api.url, tmp_path, "inference")
    with pytest.raises(KeyRenewalError, match="does not answer"):
        renew_key("http://127.0.0.1:9", tmp_path, "inference", timeout=2)
    with pytest.raises(KeyRenewalError, match="only"):
        renew_key(token_api.url, tmp_path, "API")


def test_show_needs_only_the_key_file(tmp_path, capsys, monkeypatch):
    from ops.keys import main

    write_key_file(tmp_path, inference_left_s=600, management_left_s=-1)
    monkeypatch.chdir(tmp_path)  # no config.properties here
    main(["show", "--key-dir", str(tmp_path)])
    shown = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines())
    assert shown["API"] == "never expires" and shown["inference"].endswith(" s left") and int(shown["management"].split()[0]) <= 0


def test_renewing_without_the_servers_config_says_to_pass_it(tmp_path, monkeypatch):
    from ops.keys import main

    write_key_file(tmp_path, inference_left_s=600, management_left_s=600)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(KeyFileError, match="config.properties does not exist: pass --config"):
        main(["renew-once", "--key-dir", str(tmp_path)])


def test_renew_once_through_the_command_line_renews_the_kinds_asked_for(tmp_path, token_api, capsys):
    from ops.keys import main

    write_key_file(tmp_path, inference_left_s=600, management_left_s=600)
    config = tmp_path / "config.properties"
    config.write_text(f"management_address={token_api.url}\ntoken_expiration_min=60\n")
    main(["renew-once", "--kinds", "inference", "--config", str(config), "--key-dir", str(tmp_path)])
    assert token_api.renewed == ["inference"] and "renewed: inference" in capsys.readouterr().out
