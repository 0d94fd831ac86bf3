"""docs/cli.md and docs/config.md document every subcommand, flag and config key of the code."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

try:
    from homeforge.cli import build_parser
    from homeforge import config as hf_config
except ImportError as e:  # pragma: no cover
    pytest.skip(f"needs homeforge.cli and homeforge.config ({e})", allow_module_level=True)


def _walk(parser: argparse.ArgumentParser, path: tuple[str, ...]):
    yield path, parser
    for a in parser._actions:
        if isinstance(a, argparse._SubParsersAction):
            for name, child in a.choices.items():
                yield from _walk(child, path + (name,))


def _section(text: str, title: str) -> str:
    """The part of cli.md under the heading for ``title`` (up to the next heading)."""
    m = re.search(rf"^#+ `{re.escape(title)}`\n(.*?)(?=^#+ |\Z)", text, flags=re.M | re.S)
    assert m, f"docs/cli.md has no section for `{title}`"
    return m.group(1)


def test_cli_reference_covers_every_subcommand_and_flag():
    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    for path, parser in _walk(build_parser(), ("homeforge",)):
        body = _section(text, " ".join(path))
        for a in parser._actions:
            if isinstance(a, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            names = a.option_strings or [a.dest]
            for n in names:
                assert f"`{n}`" in body, f"`{' '.join(path)}`: {n} is not documented in docs/cli.md"
            row = next(line for line in body.splitlines() if f"`{names[0]}`" in line)
            assert row.rstrip().rstrip("|").split("|")[-1].strip(), \
                f"`{' '.join(path)} {names[0]}` has no description in docs/cli.md"


def test_config_reference_covers_every_key_with_its_default():
    text = (DOCS / "config.md").read_text(encoding="utf-8")
    for sec, cls in hf_config._SECTIONS.items():
        assert f"## [{sec}]" in text, f"docs/config.md lacks the [{sec}] section"
        inst = cls()
        for f in dataclasses.fields(cls):
            key = f"{sec}.{f.name}"
            rows = [line for line in text.splitlines() if line.startswith(f"| `{key}` |")]
            assert len(rows) == 1, f"config key {key} is not documented (once) in docs/config.md"
            cells = [c.strip() for c in rows[0].strip().strip("|").split("|")]
            default = getattr(inst, f.name)
            if default is None:
                assert cells[2] == "unset", f"{key}: documented default {cells[2]!r}, code has None"
            elif isinstance(default, bool):
                assert cells[2] == f"`{str(default).lower()}`", f"{key}: documented default {cells[2]!r}, code {default!r}"
            elif isinstance(default, (int, float, str)):
                assert str(default) in cells[2], f"{key}: documented default {cells[2]!r}, code {default!r}"
            assert cells[3], f"config key {key} has no description in docs/config.md"


def test_every_config_key_is_accepted_by_the_parser():
    # the documented keys are exactly those RunConfig accepts: set each to its default
    for sec, cls in hf_config._SECTIONS.items():
        for f in dataclasses.fields(cls):
            v = getattr(cls(), f.name)
            if v is None:
                continue
            hf_config.RunConfig.from_dict({sec: {f.name: list(v) if isinstance(v, tuple) else v}})


def test_generated_references_are_up_to_date():
    script = ROOT / "scripts" / "gen_docs.py"
    if not script.is_file():
        pytest.skip("scripts/gen_docs.py not found (not a source checkout)")
    spec = importlib.util.spec_from_file_location("gen_docs", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for name, fn in (("cli.md", mod.cli_md), ("config.md", mod.config_md)):
        assert (DOCS / name).read_text(encoding="utf-8") == fn().rstrip() + "\n", \
            f"docs/{name} is out of date: run PYTHONPATH=python python scripts/gen_docs.py"


def test_docs_index_links_resolve():
    for md in sorted(DOCS.glob("*.md")) + [ROOT / "README.md"]:
        for target in re.findall(r"\]\(((?!https?:|#)[^)#\s]+)", md.read_text(encoding="utf-8")):
            assert (md.parent / target).exists(), f"{md.name} links to {target}, which does not exist"
