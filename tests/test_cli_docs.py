"""Every `--flag` the documentation gives a command exists in that command's parser.

Commands: each module with an argparse command line (its `build_parser()` builds the parser without running
anything). Where flags are read:
* the module's own docstring: usage lines (`python -m module ...`) and prose (a backticked span that names
  another command, e.g. `export.trt_engine --precision int8`, is held to that command instead);
* code blocks, and inline code that invokes a command, of every markdown file at the root and under docs/
  (whatever exists when the test runs: README.md and the guides are rewritten often);
* the Makefile's and bench/*.sh's command lines.
A flag after `#` (a comment) or after a shell separator (`|`, `&&`, `;`) belongs to no command.
"""

from __future__ import annotations

import argparse
import importlib
import re
from functools import lru_cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CLI_FOLDERS = ("handler", "export", "training", "bench", "harness", "kserve_server", "ops", "scripts")
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9]*(?:-[a-z0-9]+)*")
INVOCATION = re.compile(r"(?:^|[\s(`\"'])(?:\S*/)?python3?\s+-m\s+([A-Za-z_][\w.]*)|(?:^|[\s(`\"'])(?:(?:\S*/)?python3?\s+)?(?:\S*/)?(build_mar)\.py\b")
SEPARATOR = re.compile(r"\s(?:\|\|?|&&|;)\s|\s#|^#")
SPAN = re.compile(r"``?([^`]+)``?")


def module_name(path: Path) -> str:
    """The name `python -m` takes for a source file (a package's __main__.py: the package)."""
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__main__" else parts)


def cli_modules() -> list[str]:
    """Every module of the project with an argparse command line."""
    paths = [REPO / "build_mar.py", *(path for folder in CLI_FOLDERS for path in sorted((REPO / folder).rglob("*.py")))]
    return sorted(module_name(path) for path in paths if path.is_file() and re.search(r"^import argparse$", path.read_text(), re.M))


class ParserBuilt(Exception):
    """Raised instead of parsing: carries the parser a `main` built (modules without `build_parser`)."""

    def __init__(self, parser: argparse.ArgumentParser):
        super().__init__("parser built")
        self.parser = parser


def import_name(name: str) -> str:
    """What to import for `python -m name`: the module, or a package's __main__."""
    return f"{name}.__main__" if (REPO / name.replace(".", "/") / "__main__.py").is_file() else name


@lru_cache(maxsize=None)
def parser_of(name: str) -> argparse.ArgumentParser:
    """The module's parser from its `build_parser()`. kserve_server (another engineer's, no `build_parser` yet) is
    the one exception: its `main` is stopped at its first `parse_args`, before it does anything."""
    module = importlib.import_module(import_name(name))
    if hasattr(module, "build_parser"):
        return module.build_parser()
    assert name == "kserve_server", f"{name} has an argparse command line but no build_parser(): add one (main then calls it)"
    original = argparse.ArgumentParser.parse_args

    def capture(self, *args, **kwargs):
        raise ParserBuilt(self)

    argparse.ArgumentParser.parse_args = capture
    try:
        module.main([])
    except ParserBuilt as built:
        return built.parser
    finally:
        argparse.ArgumentParser.parse_args = original
    raise AssertionError(f"{name}.main() built no parser")


def options(name: str) -> set[str]:
    return {option for action in parser_of(name)._actions for option in action.option_strings}


def invoked(text: str, known: set[str]) -> list[tuple[str, str]]:
    """(module, flag) for every flag given to a known command in one command line (shell separators and
    comments end a command; flags before any command belong to none)."""
    found = []
    for segment in SEPARATOR.split(text):
        matches = list(INVOCATION.finditer(segment))
        for index, match in enumerate(matches):
            name = match.group(1) or match.group(2)
            end = matches[index + 1].start() if index + 1 < len(matches) else len(segment)
            if name in known:
                found += [(name, flag) for flag in FLAG.findall(segment[match.end() : end])]
    return found


def command_lines(text: str) -> list[tuple[int, str]]:
    """(first line number, logical line) with backslash continuations joined."""
    lines, start, pending = [], 1, ""
    for number, line in enumerate(text.splitlines(), 1):
        if not pending:
            start = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        lines.append((start, pending + line))
        pending = ""
    return lines


def markdown_mentions(path: Path, known: set[str]) -> list[tuple[str, str, str]]:
    """(where, module, flag) from a markdown file's code blocks and from inline code that invokes a command."""
    name = path.relative_to(REPO)
    found, fence, block = [], None, []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if line.lstrip().startswith("```"):
            if fence is not None:  # the block ends: its command lines, numbered from the fence
                for start, logical in command_lines("\n".join(block)):
                    found += [(f"{name}:{fence + start}", module, flag) for module, flag in invoked(logical, known)]
                fence, block = None, []
            else:
                fence = number
        elif fence is not None:
            block.append(line)
        else:
            found += [(f"{name}:{number}", module, flag) for span in SPAN.findall(line) for module, flag in invoked(span, known)]
    return found


def span_owner(span: str, name: str, known: set[str]) -> str | None:
    """Whose flags a backticked span of `name`'s docstring gives: its first word decides (a flag: `name`'s; a command
    of ours, as `python -m x`, `x` or `build_mar.py`: that command's; any other program, e.g. `torchserve --stop`: none)."""
    words = span.split()
    if not words or words[0].startswith("--"):
        return name
    match = INVOCATION.match(" " + span)
    candidate = (match.group(1) or match.group(2)) if match else words[0].removesuffix(".py")
    return candidate if candidate in known else None


def docstring_mentions(name: str, known: set[str]) -> list[tuple[str, str, str]]:
    """(where, module, flag) from a module's docstring: its usage lines (a line that starts with a command, after
    any VAR=value) and its prose (backticked spans by `span_owner`, the rest: the module's own)."""
    doc = importlib.import_module(import_name(name)).__doc__ or ""
    where = f"{name} docstring"
    found = []
    for _, logical in command_lines(doc):
        if INVOCATION.match(" " + re.sub(r"^\s*(?:[A-Z_]+=\S*\s+)*", "", logical)):
            found += [(where, module, flag) for module, flag in invoked(logical, known)]
            continue
        for span in SPAN.findall(logical):
            owner = span_owner(span, name, known)
            found += [(where, owner, flag) for flag in FLAG.findall(span)] if owner else []
        found += [(where, name, flag) for flag in FLAG.findall(SPAN.sub(" ", logical))]
    return found


def script_mentions(known: set[str]) -> list[tuple[str, str, str]]:
    """(where, module, flag) from the Makefile's recipes and bench/*.sh."""
    found = []
    for path in [REPO / "Makefile", *sorted((REPO / "bench").glob("*.sh"))]:
        for start, logical in command_lines(path.read_text(errors="replace")):
            found += [(f"{path.relative_to(REPO)}:{start}", module, flag) for module, flag in invoked(logical.replace("$(BIN)/python", "python"), known)]
    return found


def test_every_cli_module_has_a_parser_built_without_running_it():
    modules = cli_modules()
    assert {"build_mar", "export.quantize", "export.trt_engine", "harness.torchserve", "ops.keys", "bench.prepare_device_bundle"} <= set(modules)
    for name in modules:
        assert options(name) >= {"-h", "--help"}, name


@pytest.mark.parametrize("name", cli_modules())
def test_the_docstring_gives_only_flags_its_commands_have(name):
    known = set(cli_modules())
    unknown = [f"{where}: {flag} is not an option of `python -m {module}`" for where, module, flag in docstring_mentions(name, known)
               if flag not in options(module)]  # fmt: skip
    assert not unknown, "\n".join(unknown)


def test_markdown_and_scripts_give_only_flags_their_commands_have():
    known = set(cli_modules())
    markdown = [*REPO.glob("*.md"), *sorted((REPO / "docs").rglob("*.md"))]
    mentions = [mention for path in markdown for mention in markdown_mentions(path, known)] + script_mentions(known)
    assert len(mentions) > 50, f"only {len(mentions)} flags found: is the scan still reading the code blocks?"
    unknown = sorted({f"{where}: {flag} is not an option of `python -m {module}`" for where, module, flag in mentions if flag not in options(module)})
    assert not unknown, "\n".join(unknown)


def test_the_scan_attributes_flags_to_the_command_they_follow():
    known = {"export.quantize", "export.trt_engine", "build_mar"}
    line = "PYTHONPATH=. .venv/bin/python -m export.quantize --write x && python build_mar.py --engine e.plan  # then --not-a-flag"
    assert invoked(line, known) == [("export.quantize", "--write"), ("build_mar", "--engine")]
    assert invoked("torchserve --start --ncs | grep --color x", known) == []
    assert command_lines("python -m export.trt_engine \\\n    --onnx m.onnx\nnext") == [(1, "python -m export.trt_engine      --onnx m.onnx"), (3, "next")]
    assert span_owner("torchserve --stop", "ops.keys", known) is None and span_owner("--onnx", "export.quantize", known) == "export.quantize"
    assert span_owner("export.trt_engine --precision int8", "export.quantize", known) == "export.trt_engine"
