"""Every `trainpool ...` command that the chart's NOTES.txt prints after an install, and
every one docs/KUBERNETES.md shows, is a command of the CLI as built: its words end at a
command, not at a group (a group prints its help, not the list the line promises), and
its options and arguments parse as that command's."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import typer
import typer.core
import typer.main

from scheduler.cli.main import app

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "trainpool"
SEPARATORS = {"&&", "||", ";", "|", "&", "(", ")", "$(", "$", "<", ">", "<<", ">>"}


def invocations(line: str) -> list[list[str]]:
    """The `trainpool` commands in one shell line: split at && ; | & and subshells,
    comments dropped."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    out: list[list[str]] = []
    current: list[str] = []
    for token in lexer:
        if token in SEPARATORS or set(token) <= set("&|;()<>$"):
            out.append(current)
            current = []
        else:
            current.append(token)
    out.append(current)
    return [words[1:] for words in out if words and words[0] == "trainpool"]


def notes_commands(notes: str) -> list[list[str]]:
    # Commands are the indented lines (the first line names the release, not a command).
    return [cmd for line in notes.splitlines() if line.startswith("   ") for cmd in invocations(line)]


def docs_commands(text: str) -> list[list[str]]:
    found = []
    for block in re.findall(r"^```[a-z]*\n(.*?)^```", text, flags=re.S | re.M):
        for line in block.replace("\\\n", " ").splitlines():
            found += invocations(line)
    for span in re.findall(r"`(trainpool [^`]+)`", text):
        found += invocations(span)
    return found


def problem(args: list[str]) -> str | None:
    """Why ``trainpool ARGS`` is not a real command, or None. Placeholders (``...``) and
    ``--help`` are left out; everything else must parse."""
    words = [w for w in args if w not in ("...", "--help")]
    # typer builds on its own copy of click: its group and error types, not click's.
    cmd = typer.main.get_command(app)
    path = ["trainpool"]
    while isinstance(cmd, typer.core.TyperGroup):
        if not words or words[0].startswith("-"):
            return f"`{' '.join(path)}` is a group: it prints its help (commands: {', '.join(cmd.commands)})"
        sub = cmd.get_command(typer.Context(cmd), words[0])
        if sub is None:
            return f"`{' '.join(path)}` has no command '{words[0]}'"
        cmd, path, words = sub, [*path, words[0]], words[1:]
    try:
        cmd.make_context(" ".join(path), list(words))
    except typer.TyperException as exc:  # a usage error: unknown option, missing argument
        return f"`{' '.join(path)} {' '.join(words)}`: {exc}"
    return None


def test_the_checker_refuses_a_group_a_typo_and_a_wrong_option() -> None:
    assert problem(["nodes", "list"]) is None
    assert problem(["submit", "job.yaml", "--wait"]) is None
    assert "is a group: it prints its help" in (problem(["nodes"]) or "")
    assert "is a group" in (problem([]) or "")
    assert "has no command 'lsit'" in (problem(["jobs", "lsit"]) or "")
    assert "No such option" in (problem(["tokens", "create", "--role", "agent", "--nod", "x"]) or "")
    assert invocations("a && trainpool jobs list; trainpool queue  # why each waits") == [
        ["jobs", "list"],
        ["queue"],
    ]
    assert invocations("export X=$(trainpool tokens list -o json | jq .)") == [
        ["tokens", "list", "-o", "json"]
    ]


def test_every_command_in_the_kubernetes_doc_is_real() -> None:
    commands = docs_commands((ROOT / "docs" / "KUBERNETES.md").read_text())
    assert len(commands) >= 3 and commands[0][:1] == ["server"]
    assert [problem(c) for c in commands if problem(c) is not None] == []


@pytest.mark.integration  # a real helm binary
@pytest.mark.parametrize("values", [(), ("--set", "agent.enabled=false")], ids=["defaults", "no-agent"])
def test_every_command_the_install_notes_print_is_a_real_command(values: tuple[str, ...]) -> None:
    from chart.test_chart import helm

    out = helm("install", "tp", str(CHART), "--dry-run=client", "--namespace", "pool", *values).stdout
    commands = notes_commands(out[out.index("NOTES:") :])
    named = {" ".join(c[:2]) for c in commands}
    assert {"nodes list", "submit hello.yaml", "jobs list", "jobs logs"} <= named
    assert ("tokens create" in named) == (values == ())
    assert [problem(c) for c in commands if problem(c) is not None] == []
