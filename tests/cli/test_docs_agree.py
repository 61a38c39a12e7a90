"""README, ``--help`` and spec/cli.md agree, generically over the parser: every option has help text,
every command's help ends with examples and exit statuses, every option the parser has is documented
in the command's section of spec/cli.md, every option documented there exists, and README's Use
block names only real commands and options and has a line for every command."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from dtstore.cli import docgen
from dtstore.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[2]
SPEC = (ROOT / "spec" / "cli.md").read_text()
README = (ROOT / "README.md").read_text()
PARSER = build_parser()
COMMANDS = {c.name: c for c in docgen.commands(PARSER)}
OPTION = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*(?:/[a-z0-9…-]+)*)")


def long_options(parser: argparse.ArgumentParser) -> set[str]:
    return {o for a in docgen.options(parser) for o in a.option_strings if o.startswith("--")}


GLOBAL = long_options(PARSER) | {"--help"}


def command_options(name: str) -> set[str]:
    """The options of a command and of its sub-commands, without the global ones."""
    command = COMMANDS[name]
    found = long_options(command.parser)
    for child in command.children:
        found |= long_options(child.parser)
    return found - GLOBAL


def expand(token: str) -> list[str]:
    """``--keep-hourly/daily`` → ``--keep-hourly``, ``--keep-daily`` (the spec's compact form)."""
    first, *rest = token.split("/")
    stem = first.rsplit("-", 1)[0]
    return [first, *(f"{stem}-{r}" for r in rest if "…" not in r)]


def sections() -> dict[str, str]:
    """Command name → its text in spec/cli.md §2 (``### `name` `` headings)."""
    found: dict[str, str] = {}
    parts = re.split(r"^### `([a-z-]+)`\s*$", SPEC.split("\n## 3.")[0], flags=re.MULTILINE)
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        found[name] = body
    return found


SECTIONS = sections()


def documented(name: str) -> dict[str, set[str]]:
    """Command → options that the section of ``name`` documents for it.  An option inside a code
    span that starts with another command's name (`` `prune --exclusive` ``) belongs to that one."""
    owners: dict[str, set[str]] = {}
    body = SECTIONS.get(name, "")
    fences = re.findall(r"^```[a-z]*\n(.*?)^```", body, flags=re.MULTILINE | re.DOTALL)
    body = re.sub(r"^```[a-z]*\n.*?^```", "", body, flags=re.MULTILINE | re.DOTALL)
    for token in OPTION.findall("\n".join(fences)):
        owners.setdefault(name, set()).update(expand(token))
    spans = re.findall(r"`([^`\n]+)`", body)
    for span in spans:
        words = span.removeprefix("dtstore ").split()
        owner = words[0] if words and words[0] in COMMANDS and words[0] != name else name
        for token in OPTION.findall(span):
            for option in expand(token):
                owners.setdefault(owner, set()).add(option)
    for token in OPTION.findall(re.sub(r"`[^`\n]+`", "", body)):
        owners.setdefault(name, set()).update(expand(token))
    return owners


def in_section(name: str) -> set[str]:
    """Every option named anywhere in the command's section (for "is it documented")."""
    return {o for token in OPTION.findall(SECTIONS.get(name, "")) for o in expand(token)}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_option_and_argument_has_help(name: str) -> None:
    missing = [f"{path}: {'/'.join(a.option_strings) or a.dest}"
               for path, parser in docgen.walk(COMMANDS[name].parser, f"dtstore {name}")
               for a in docgen.options(parser) + docgen.positionals(parser)
               if not (a.help or "").strip()]
    assert not missing, f"no help text: {missing}"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_ends_with_examples_and_exit_status(name: str) -> None:
    text = COMMANDS[name].parser.format_help()
    assert "\nexamples:\n  dtstore " in text, f"`dtstore {name} --help` has no examples (cli/helptext.py EXAMPLES)"
    tail = text[text.index("\nexit status:\n"):] if "\nexit status:\n" in text else ""
    assert tail, f"`dtstore {name} --help` has no exit status section"
    assert re.search(r"^\s+0\s+ok$", tail, re.MULTILINE) and text.rstrip().endswith(tail.rstrip())


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_spec_documents_every_option_of_the_command(name: str) -> None:
    assert name in SECTIONS, f"spec/cli.md §2 has no ### `{name}` section"
    missing = sorted(command_options(name) - in_section(name))
    assert not missing, f"spec/cli.md, section `{name}`, does not document {missing}"


@pytest.mark.parametrize("name", sorted(SECTIONS))
def test_every_option_the_spec_documents_exists(name: str) -> None:
    assert name in COMMANDS, f"spec/cli.md documents a command `{name}` that the parser does not have"
    wrong = {owner: sorted(options - command_options(owner) - GLOBAL)
             for owner, options in documented(name).items() if owner in COMMANDS}
    wrong = {k: v for k, v in wrong.items() if v}
    assert not wrong, f"spec/cli.md, section `{name}`, documents options that do not exist: {wrong}"


def test_spec_documents_the_global_options() -> None:
    synopsis = SPEC.split("\n## 2.")[0]
    missing = sorted(o for o in GLOBAL - {"--help"} if o not in synopsis)
    assert not missing, f"spec/cli.md §1 does not document the global options {missing}"


def _use_lines() -> list[str]:
    block = README.split("## Use", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if re.search(r"(^|\| )dtstore ", line)]


def test_readme_use_block_names_real_commands_and_options() -> None:
    problems = []
    for line in _use_lines():
        for use in re.findall(r"(?:^|\| )dtstore ([a-z-]+)([^|#]*)", line):
            name, rest = use
            if name not in COMMANDS:
                problems.append(f"{line!r}: no command {name}")
                continue
            known = command_options(name) | GLOBAL
            problems += [f"{line!r}: {name} has no {o}" for o in OPTION.findall(rest) if o not in known]
    assert not problems, problems


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_readme_use_block_has_a_line_for_the_command(name: str) -> None:
    used = {m for line in _use_lines() for m in re.findall(r"(?:^|\| )dtstore ([a-z-]+)", line)}
    assert name in used, f"README's Use block has no `dtstore {name}` line"


def test_the_checks_can_fail() -> None:
    assert expand("--keep-hourly/daily/…/yearly") == ["--keep-hourly", "--keep-daily", "--keep-yearly"]
    assert "--no-such-option" not in command_options("snapshot")
    assert "--exclude" in command_options("snapshot") and "--exclude" in in_section("snapshot")
