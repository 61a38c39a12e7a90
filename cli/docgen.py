"""Man pages and shell completion scripts, generated from the argument parser (``dtstore generate``)."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

from dtstore import __version__, clock
from dtstore.cli import helptext

ENVIRONMENT = [
    ("DTSTORE_REPOSITORY", "the repository URL when --repo is not given"),
    ("DTSTORE_PASSWORD_FILE", "a file holding the password"),
    ("DTSTORE_PASSWORD_COMMAND", "a command that prints the password"),
    ("DTSTORE_PASSWORD", "the password itself"),
    ("DTSTORE_CACHE_DIR", "the local cache (default $XDG_CACHE_HOME/dtstore)"),
    ("DTSTORE_SFTP_KEY", "the private key for sftp:// repositories"),
    ("DTSTORE_SFTP_KNOWN_HOSTS", "the known-hosts file for sftp:// (default ~/.ssh/known_hosts)"),
    ("TZ", "the local time zone of text output (see --utc)"),
]


@dataclass
class Command:
    name: str
    summary: str
    parser: argparse.ArgumentParser
    children: list[Command]


def subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction | None:  # type: ignore[type-arg]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def commands(parser: argparse.ArgumentParser) -> list[Command]:
    """The sub-commands of ``parser`` (and theirs), in registration order."""
    sub = subparsers(parser)
    if sub is None:
        return []
    summaries = {a.dest: a.help or "" for a in sub._choices_actions}
    return [Command(name, summaries.get(name, ""), p, commands(p)) for name, p in sub.choices.items()]


def options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions
            if a.option_strings and not isinstance(a, argparse._SubParsersAction) and a.help != argparse.SUPPRESS]


def positionals(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions
            if not a.option_strings and not isinstance(a, argparse._SubParsersAction)]


def takes_value(action: argparse.Action) -> bool:
    return action.nargs != 0


def walk(parser: argparse.ArgumentParser, prefix: str = "dtstore") -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """(``dtstore key add``, parser) for the program and every command at any depth."""
    yield prefix, parser
    for command in commands(parser):
        yield from walk(command.parser, f"{prefix} {command.name}")


# man pages ---------------------------------------------------------------------------------------

def _roff(text: str) -> str:
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join(("\\&" + line) if line.startswith((".", "'")) else line for line in text.split("\n"))


def _option_heading(action: argparse.Action) -> str:
    names = ", ".join(f"\\fB{_roff(o)}\\fR" for o in action.option_strings)
    if takes_value(action):
        metavar = action.metavar or (action.dest.upper() if action.choices is None else "|".join(action.choices))
        names += f" \\fI{_roff(str(metavar))}\\fR"
    return names


def _help(action: argparse.Action) -> str:
    text = (action.help or "").replace("%(default)s", str(action.default)).replace("%%", "%")
    if action.choices is not None and takes_value(action) and action.option_strings:
        text += f" (one of: {', '.join(map(str, action.choices))})"
    return text


def _positional_name(action: argparse.Action) -> str:
    if action.metavar:
        return str(action.metavar)
    if action.choices is not None:
        return "{" + ",".join(map(str, action.choices)) + "}"
    return action.dest


def _sections(parser: argparse.ArgumentParser) -> list[str]:
    lines: list[str] = []
    if positionals(parser):
        lines.append(".SH ARGUMENTS")
        for action in positionals(parser):
            lines += [".TP", f"\\fI{_roff(_positional_name(action))}\\fR", _roff(_help(action))]
    if options(parser):
        lines.append(".SH OPTIONS")
        for action in options(parser):
            lines += [".TP", _option_heading(action), _roff(_help(action))]
    return lines


def _epilog_sections(epilog: str) -> list[str]:
    lines: list[str] = []
    for block in epilog.split("\n\n"):
        head, _, body = block.partition("\n")
        title = head.rstrip(":").upper()
        lines.append(f".SH {title}")
        lines += [".nf", *(_roff(line.strip()) for line in body.splitlines()), ".fi"]
    return lines


def _usage(parser: argparse.ArgumentParser) -> str:
    first, *rest = re.sub(r"^usage:\s*", "", parser.format_usage().strip()).split("\n")
    return "\n".join([first, *("    " + line.strip() for line in rest)])


def man_pages(parser: argparse.ArgumentParser, today: dt.date | None = None) -> dict[str, str]:
    """File name → roff text: ``dtstore.1`` and one ``dtstore-COMMAND.1`` per command."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "")  # reproducible builds
    fixed = dt.datetime.fromtimestamp(int(epoch), dt.UTC).date() if epoch.isdigit() else None
    date = (today or fixed or clock.now().date()).isoformat()
    pages: dict[str, str] = {}
    top = commands(parser)
    for name, p in walk(parser):
        depth = name.count(" ")
        if depth > 1:
            continue  # sub-sub-commands are described on their command's page
        page = name.replace(" ", "-")
        cmd = next((c for c in top if f"dtstore {c.name}" == name), None)
        summary = cmd.summary if cmd else (parser.description or "")
        lines = [f'.TH {page.upper()} 1 "{date}" "dtstore {__version__}" "dtstore manual"',
                 ".SH NAME", f"{_roff(page)} \\- {_roff(summary)}", ".SH SYNOPSIS", ".nf", _roff(_usage(p)), ".fi"]
        if p.description:
            lines += [".SH DESCRIPTION", _roff(p.description)]
        lines += _sections(p)
        if cmd is None:
            lines.append(".SH COMMANDS")
            for c in top:
                lines += [".TP", f"\\fBdtstore\\-{_roff(c.name)}\\fR(1)", _roff(c.summary)]
            lines.append(".SH ENVIRONMENT")
            for var, meaning in ENVIRONMENT:
                lines += [".TP", f"\\fB{_roff(var)}\\fR", _roff(meaning)]
            lines += [".SH EXIT STATUS", ".nf", *(_roff(f"{c:>3}  {m}") for c, m in helptext.EXIT_MEANINGS.items()),
                      ".fi"]
        else:
            for child in cmd.children:
                lines += [f'.SH "{_roff((cmd.name + " " + child.name).upper())}"', ".nf", _roff(_usage(child.parser)),
                          ".fi", _roff(child.summary)]
                for action in positionals(child.parser) + options(child.parser):
                    heading = (_option_heading(action) if action.option_strings
                               else f"\\fI{_roff(_positional_name(action))}\\fR")
                    lines += [".TP", heading, _roff(_help(action))]
            if p.epilog:
                lines += _epilog_sections(p.epilog)
        see = ["dtstore(1)"] if cmd else [f"dtstore-{c.name}(1)" for c in top]
        lines += [".SH SEE ALSO", ", ".join(f"\\fB{_roff(s.split('(')[0])}\\fR({s.split('(')[1]}" for s in see)]
        pages[f"{page}.1"] = "\n".join(lines) + "\n"
    return pages


# completion --------------------------------------------------------------------------------------

def _all_options(parser: argparse.ArgumentParser) -> list[str]:
    return [o for a in options(parser) for o in a.option_strings]


def _valued(parser: argparse.ArgumentParser) -> list[str]:
    return [o for a in options(parser) if takes_value(a) for o in a.option_strings]


def _choices(parser: argparse.ArgumentParser) -> dict[str, list[str]]:
    return {o: [str(c) for c in a.choices] for a in options(parser) if a.choices and takes_value(a)
            for o in a.option_strings}


def first_words(command: Command) -> list[tuple[str, str]]:
    """What the word after the command can be: its sub-commands, or its first positional's choices."""
    if command.children:
        return [(child.name, child.summary) for child in command.children]
    for action in positionals(command.parser):
        if action.choices:
            return [(str(c), action.help or "") for c in action.choices]
        break
    return []


def bash_completion(parser: argparse.ArgumentParser) -> str:
    top = commands(parser)
    valued = sorted({v for c in top for v in _valued(c.parser)} | set(_valued(parser)))
    lines = ["# bash completion for dtstore (generated by `dtstore generate --completion bash`)",
             "_dtstore() {",
             '    local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}"',
             '    local cmd="" sub="" i',
             f'    local valued=" {" ".join(valued)} "',
             "    for ((i=1; i<COMP_CWORD; i++)); do",
             '        local w="${COMP_WORDS[i]}"',
             '        if [[ "$w" == -* ]]; then',
             '            [[ "$valued" == *" $w "* ]] && ((i++))',
             '        elif [[ -z "$cmd" ]]; then cmd="$w"',
             '        elif [[ -z "$sub" ]]; then sub="$w"',
             "        fi",
             "    done",
             '    local opts="" words=""',
             '    case "$prev" in']
    choice_map: dict[str, list[str]] = dict(_choices(parser))
    for c in top:
        choice_map.update(_choices(c.parser))
    for option, values in sorted(choice_map.items()):
        lines.append(f'        {option}) COMPREPLY=($(compgen -W "{" ".join(values)}" -- "$cur")); return;;')
    lines += ['    esac',
              '    if [[ "$valued" == *" $prev "* ]]; then COMPREPLY=($(compgen -f -- "$cur")); return; fi',
              '    case "$cmd" in',
              f'        "") words="{" ".join(c.name for c in top)}"; opts="{" ".join(_all_options(parser))}";;']
    for c in top:
        sub_words = " ".join(name for name, _ in first_words(c))
        opts = " ".join(_all_options(c.parser) + [o for child in c.children for o in _all_options(child.parser)])
        words = f'[[ -z "$sub" ]] && words="{sub_words}"; ' if sub_words else ""
        lines.append(f'        {c.name}) {words}opts="{opts}";;')
    lines += ['    esac',
              '    if [[ "$cur" == -* ]]; then COMPREPLY=($(compgen -W "$opts" -- "$cur"))',
              '    elif [[ -n "$words" ]]; then COMPREPLY=($(compgen -W "$words" -- "$cur"))',
              '    else COMPREPLY=($(compgen -f -- "$cur")); fi',
              "}",
              "complete -o default -F _dtstore dtstore", ""]
    return "\n".join(lines)


def _zsh_text(text: str) -> str:
    return text.replace("'", "'\\''").replace("[", "(").replace("]", ")").replace(":", "\\:")


def _zsh_specs(parser: argparse.ArgumentParser) -> list[str]:
    specs = []
    for a in options(parser):
        repeat = "*" if isinstance(a, (argparse._AppendAction, argparse._CountAction)) else ""
        value = ""
        if takes_value(a):
            metavar = _zsh_text(str(a.metavar or a.dest.upper()))
            action = f"({' '.join(map(str, a.choices))})" if a.choices else "_files"
            value = f":{metavar}:{action}"
        for o in a.option_strings:
            specs.append(f"'{repeat}{o}[{_zsh_text(a.help or '')}]{value}'")
    return specs


def zsh_completion(parser: argparse.ArgumentParser) -> str:
    top = commands(parser)
    lines = ["#compdef dtstore", "# zsh completion for dtstore (generated by `dtstore generate --completion zsh`)",
             "_dtstore() {", "  local curcontext=\"$curcontext\" state line", "  typeset -A opt_args",
             "  local -a commands", "  commands=("]
    lines += [f"    '{c.name}:{_zsh_text(c.summary)}'" for c in top]
    lines += ["  )", "  _arguments -C \\"]
    lines += [f"    {spec} \\" for spec in _zsh_specs(parser)]
    lines += ["    '1:command:->command' \\", "    '*::argument:->argument'",
              "  case $state in", "    command) _describe -t commands 'dtstore command' commands ;;",
              "    argument)", "      case $words[1] in"]
    for c in top:
        specs = _zsh_specs(c.parser)
        if first_words(c):
            subs = " ".join(f"'{name}:{_zsh_text(summary)}'" for name, summary in first_words(c))
            lines.append(f"        {c.name}) local -a subs; subs=({subs}); _describe -t commands subcommand subs ;;")
        else:
            lines.append(f"        {c.name}) _arguments {' '.join(specs)} '*:file:_files' ;;")
    lines += ["      esac ;;", "  esac", "}", '_dtstore "$@"', ""]
    return "\n".join(lines)


def _fish_text(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _fish_option(condition: str, action: argparse.Action) -> str:
    parts = ["complete -c dtstore", f"-n {_fish_text(condition)}"]
    for o in action.option_strings:
        parts.append(f"-l {o[2:]}" if o.startswith("--") else f"-s {o[1:]}")
    if takes_value(action):
        if action.choices:
            parts.append(f"-x -a {_fish_text(' '.join(map(str, action.choices)))}")
        else:
            parts.append("-r")
    parts.append(f"-d {_fish_text(action.help or '')}")
    return " ".join(parts)


def fish_completion(parser: argparse.ArgumentParser) -> str:
    top = commands(parser)
    names = " ".join(c.name for c in top)
    lines = ["# fish completion for dtstore (generated by `dtstore generate --completion fish`)"]
    lines += [f"complete -c dtstore -f -n '__fish_use_subcommand' -a {c.name} -d {_fish_text(c.summary)}" for c in top]
    lines += [_fish_option("__fish_use_subcommand", a) for a in options(parser)]
    for c in top:
        condition = f"__fish_seen_subcommand_from {c.name}"
        lines += [_fish_option(condition, a) for a in options(c.parser)]
        words = first_words(c)
        for name, summary in words:
            sub_cond = f"{condition}; and not __fish_seen_subcommand_from {' '.join(w for w, _ in words)}"
            lines.append(f"complete -c dtstore -f -n {_fish_text(sub_cond)} -a {name} -d {_fish_text(summary)}")
        for child in c.children:
            lines += [_fish_option(f"{condition}; and __fish_seen_subcommand_from {child.name}", a)
                      for a in options(child.parser)]
    lines.append(f"# commands: {names}")
    return "\n".join(lines) + "\n"


COMPLETIONS = {"bash": bash_completion, "zsh": zsh_completion, "fish": fish_completion}
