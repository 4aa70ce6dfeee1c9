"""MkDocs hook: the command-line reference page, written from vaelab's real argparse
parser (``vaelab.cli.build_parser()``) every time the site is built, never by hand.

It walks the parser and its subcommands (nested ones too, e.g. ``vaelab classifier
train``) and writes one section per command: its description, the usage line argparse
prints, and a table per argument group with every flag, its value and its help (with argparse's
default where the help does not give one).
The page enters the site as ``cli.md`` without touching docs/.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator

PAGE = "cli.md"
USAGE_WIDTH = 76  # fits the page's code blocks without scrolling


def commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ("vaelab",), help: str = ""
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser, str]]:
    """(command words, parser, one-line help) of the parser and every subcommand, depth
    first, in the order ``--help`` lists them."""
    yield path, parser, help
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = _subcommand_helps(parser, action)
            for name, sub in action.choices.items():
                yield from commands(sub, (*path, name), helps.get(name, ""))


def _subcommand_helps(
    parser: argparse.ArgumentParser, action: argparse._SubParsersAction
) -> dict[str, str]:
    """Each subcommand's one-line help as ``--help`` prints it (%-formatting applied)."""
    formatter = parser._get_formatter()
    return {a.dest: formatter._expand_help(a) if a.help else "" for a in action._choices_actions}


def anchor(path: tuple[str, ...]) -> str:
    return "-".join(path)


def _escape(text: str) -> str:
    """Markdown-safe table cell text; `code spans` are kept as they are."""
    parts = text.replace("\n", " ").split("`")
    for i in range(0, len(parts), 2):
        for ch in "\\*_[]<>":
            parts[i] = parts[i].replace(ch, "\\" + ch)
    return "`".join(parts).replace("|", "\\|")


def _value(action: argparse.Action, formatter: argparse.HelpFormatter) -> str:
    if action.nargs == 0 or not action.option_strings:  # a flag, or a positional's own name
        return ""
    if action.choices is not None and not isinstance(action, argparse._SubParsersAction):
        return " \\| ".join(f"`{c}`" for c in action.choices)
    default = action.dest.upper() if action.option_strings else action.dest
    return f"`{formatter._format_args(action, default)}`"


def _default(action: argparse.Action, help_text: str) -> str:
    """ " (default X)" from the parser, unless the help already says what the default is."""
    if action.required or action.default in (None, argparse.SUPPRESS) or "default" in help_text:
        return ""
    if action.nargs == 0 and action.default is False:
        return ""
    return f" (default `{action.default}`)"


def _usage(parser: argparse.ArgumentParser) -> str:
    formatter = argparse.HelpFormatter(prog=parser.prog, width=USAGE_WIDTH)
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups)
    return formatter.format_help().strip()


def _arguments_table(parser: argparse.ArgumentParser, actions: list[argparse.Action]) -> str:
    formatter = parser._get_formatter()
    rows = ["| argument | value | description |", "|---|---|---|"]
    for action in actions:
        names = action.option_strings or [action.metavar or action.dest]
        name = ", ".join(f"`{n}`" for n in names)
        if action.required and action.option_strings:
            name += " (required)"
        help_text = formatter._expand_help(action) if action.help else ""
        description = _escape(help_text) + _default(action, help_text)
        rows.append(f"| {name} | {_value(action, formatter)} | {description} |")
    return "\n".join(rows)


def _shown(action: argparse.Action) -> bool:
    return not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction))


def render(parser: argparse.ArgumentParser) -> str:
    """The whole reference page as Markdown."""
    walked = list(commands(parser))
    out = [
        "# Command-line reference",
        "",
        "This page is generated from `vaelab.cli.build_parser()`, the parser the `vaelab` "
        "command itself uses, each time the documentation is built; `vaelab COMMAND --help` "
        "prints the same flags. `python -m vaelab` works as well as `vaelab`. Every command "
        "also takes `-h`/`--help`.",
        "",
        "| command | what it does |",
        "|---|---|",
    ]
    for path, _sub, help_text in walked[1:]:
        out.append(f"| [`{' '.join(path)}`](#{anchor(path)}) | {_escape(help_text)} |")
    for path, sub, help_text in walked:
        out += ["", f"## {' '.join(path)} {{ #{anchor(path)} }}", ""]
        description = sub.description or help_text
        if description:
            out += [_escape(description), ""]
        out += ["```text", _usage(sub), "```", ""]
        children = [a for a in sub._actions if isinstance(a, argparse._SubParsersAction)]
        if len(path) == 1:  # the top's subcommands are the table above
            children = []
        for action in children:
            helps = _subcommand_helps(sub, action)
            out += ["| subcommand | what it does |", "|---|---|"]
            for name in action.choices:
                link = anchor((*path, name))
                out.append(f"| [`{name}`](#{link}) | {_escape(helps.get(name, ''))} |")
            out.append("")
        for group in sub._action_groups:
            actions = [a for a in group._group_actions if _shown(a)]
            if not actions:
                continue
            title = group.title or "arguments"
            if title in ("options", "optional arguments"):
                title = "options"
            elif title == "positional arguments":
                title = "arguments"
            out += [f"**{_escape(title)}**", "", _arguments_table(sub, actions), ""]
        if sub.epilog:
            out += [_escape(sub.epilog), ""]
    return "\n".join(out).rstrip() + "\n"


# ------------------------------------------------------------------------ the mkdocs hook


def on_files(files, config):
    from mkdocs.structure.files import File

    from vaelab.cli import build_parser

    files.append(File.generated(config, PAGE, content=render(build_parser())))
    return files
