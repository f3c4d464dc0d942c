"""docs/configuration.md documents exactly what the code has: every `handler:` key of model-config.yaml with its
default (handler/settings.py), every build_mar.py option, the --target presets (export/mar.py) and every
config.properties key. Reads the page's tables; builds build_mar.py's parser without building an archive."""

from __future__ import annotations

import argparse
import re
from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from export.mar import SERVING_TARGETS, TorchServeSettings
from handler.settings import BACKEND_NAMES, BACKEND_YAML_KEYS, HandlerSettings
from ops.properties import read_properties

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "configuration.md"


def section(heading: str) -> str:
    """The text under the markdown heading `heading` (any level), up to the next heading of that level or above."""
    lines = DOC.read_text(encoding="utf-8").splitlines()
    for start, line in enumerate(lines):
        match = re.match(r"(#+) (.*)", line)
        if match and match.group(2).strip() == heading:
            level = len(match.group(1))
            body = []
            for other in lines[start + 1 :]:
                found = re.match(r"(#+) ", other)
                if found and len(found.group(1)) <= level:
                    break
                body.append(other)
            return "\n".join(body)
    raise AssertionError(f"{DOC.name} has no heading {heading!r}")


def table_rows(text: str) -> list[list[str]]:
    """The cells of the first markdown table in `text`, header and separator left out."""
    rows, started = [], False
    for line in text.splitlines():
        if line.startswith("|"):
            started = True
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
        elif started:
            break
    assert len(rows) > 2, "no table found"
    return rows[2:]


def code_spans(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def build_mar_parser() -> argparse.ArgumentParser:
    """build_mar.py's parser. build_mar.py builds it inside parse_args(), so the parser is caught at its
    parse_args call (nothing is parsed, built or archived); a build_parser() function is used when it exists."""
    import build_mar

    if hasattr(build_mar, "build_parser"):
        return build_mar.build_parser()

    class Caught(Exception):
        pass

    caught = {}

    def catch(self, args=None, namespace=None):
        caught["parser"] = self
        raise Caught

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "parse_args", catch)
        with pytest.raises(Caught):
            build_mar.parse_args([])
    return caught["parser"]


def test_every_handler_key_is_documented_with_its_default():
    rows = table_rows(section("`handler:` keys (model-config.yaml)"))
    documented = {}
    for row in rows:
        (key,) = code_spans(row[0])
        assert key not in documented, f"{key} documented twice"
        documented[key] = row[1]
    settings_keys = {f.name for f in fields(HandlerSettings) if f.name not in BACKEND_NAMES} | set(BACKEND_YAML_KEYS)
    written = HandlerSettings().to_model_yaml()
    assert set(written) == settings_keys  # what an archive writes is what a worker reads
    assert set(documented) == settings_keys, {"undocumented": sorted(settings_keys - set(documented)), "not settings": sorted(set(documented) - settings_keys)}
    for key, cell in documented.items():
        assert yaml.safe_load(code_spans(cell)[0]) == written[key], f"{key}: documented default {cell!r}, settings default {written[key]!r}"


def test_every_build_mar_option_is_documented():
    parser = build_mar_parser()
    options = {option for action in parser._actions for option in action.option_strings if option not in ("-h", "--help")}
    documented = [option for row in table_rows(section("build_mar.py options")) for option in re.findall(r"`(--[a-z0-9-]+)`", row[0])]
    assert len(documented) == len(set(documented)), "an option is documented twice"
    assert set(documented) == options, {"undocumented": sorted(options - set(documented)), "not options": sorted(set(documented) - options)}


def test_the_documented_presets_are_the_targets_defaults():
    rows = table_rows(section("Presets: `--target cpu` / `--target gpu`"))
    header = [line for line in section("Presets: `--target cpu` / `--target gpu`").splitlines() if line.startswith("|")][0]
    targets = [code_spans(cell)[0] for cell in header.strip().strip("|").split("|")[1:]]
    assert targets == list(SERVING_TARGETS)
    for target_index, target in enumerate(targets, start=1):
        config = TorchServeSettings.for_target(target).model_config(HandlerSettings())
        config.pop("handler")
        documented = {code_spans(row[0])[0]: int(row[target_index]) for row in rows}
        assert documented == config, target


def test_every_config_properties_key_is_documented():
    keys = set(read_properties(REPO / "config.properties"))
    rows = table_rows(section("config.properties"))
    documented = [code_spans(row[0])[0] for row in rows]
    assert len(documented) == len(set(documented))
    assert set(documented) == keys, {"undocumented": sorted(keys - set(documented)), "not in config.properties": sorted(set(documented) - keys)}
