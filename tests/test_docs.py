"""Every CLI command has help text and is named in the README, so the docs cannot fall behind."""

from __future__ import annotations

from pathlib import Path

import click

from cli.main import cli

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def commands(group: click.Group, prefix: str = "fleet") -> list[tuple[str, click.Command]]:
    out = []
    for name, cmd in sorted(group.commands.items()):
        path = f"{prefix} {name}"
        out.append((path, cmd))
        if isinstance(cmd, click.Group):
            out += commands(cmd, path)
    return out


def test_every_command_has_help_and_is_in_the_readme():
    found = commands(cli)
    assert len(found) > 15
    missing_help = [path for path, cmd in found if not (cmd.help or "").strip()]
    assert not missing_help
    missing_doc = [path for path, _ in found if path not in README and not path.endswith((" run", " list"))]
    assert not missing_doc, f"not in README.md: {missing_doc}"
