"""The README's command line is the real one: flags, ``-p`` keys and config sections both ways."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from shrinkbench_core.cli import KIND_CHOICES, build_parser, build_run_parser
from shrinkbench_core.config import ExperimentConfig
from shrinkbench_core.registry import get_registry

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z-]*|-p)(?![\w-])")
COMMAND = re.compile(r"\bshrinkbench(?:-run| [a-z]+)\b")


def section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start:end]


def subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    commands = dict(action.choices)
    commands["shrinkbench-run"] = build_run_parser()
    return commands


def parser_for(command: str) -> argparse.ArgumentParser | None:
    """The parser of ``shrinkbench-run`` or ``shrinkbench SUB`` (None: not a sub-command)."""
    name = command.removeprefix("shrinkbench").strip() or "shrinkbench-run"
    return subparsers().get("shrinkbench-run" if name == "-run" else name)


def options(parser: argparse.ArgumentParser) -> set[str]:
    """Every option string of ``parser`` (long forms and ``-p``), ``--help`` aside."""
    return {option for action in actions(parser) for option in action.option_strings}


def actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The optional arguments of ``parser`` that the README must name (not ``--help``)."""
    return [
        action
        for action in parser._actions
        if action.option_strings and "--help" not in action.option_strings
    ]


def synopsis() -> dict[str, str]:
    """Command -> its synopsis text (continuation lines joined), from the Command line block."""
    block = section("Command line").split("```")[1]
    commands: dict[str, str] = {}
    current = None
    for line in block.splitlines():
        if line.startswith("shrinkbench"):
            current = COMMAND.match(line).group(0)
            commands[current] = commands.get(current, "") + " " + line
        elif line.startswith(" ") and current:
            commands[current] += " " + line
    return commands


def mentions() -> list[tuple[str, str]]:
    """Every (command, text after it) in the README's code blocks and inline code."""
    texts = []
    for index, block in enumerate(README.split("```")):
        if index % 2:  # inside a fenced block
            texts += block.splitlines()
        else:
            texts += re.findall(r"`([^`\n]+)`", block)
    found = []
    for text in texts:
        text = text.split("#")[0]
        matches = list(COMMAND.finditer(text))
        for position, match in enumerate(matches):
            following = matches[position + 1] if position + 1 < len(matches) else None
            end = following.start() if following else len(text)
            found.append((match.group(0), text[match.end() : end]))
    return found


def test_the_synopsis_names_every_option_of_each_command_and_nothing_else():
    commands = synopsis()
    assert {"shrinkbench plugins", "shrinkbench list", "shrinkbench-run",
            "shrinkbench sweep"} <= set(commands)  # fmt: skip
    for command, text in commands.items():
        parser = parser_for(command)
        assert parser is not None, command
        named = set(FLAG.findall(text))
        if command == "shrinkbench run":  # "the same options"
            continue
        assert named <= options(parser), (command, named - options(parser))
        unnamed = [a.option_strings for a in actions(parser) if not named & set(a.option_strings)]
        assert not unnamed, (command, unnamed)


def test_the_synopsis_lists_every_kind_of_component():
    listed = re.search(r"shrinkbench list \{([a-z,]+)\}", section("Command line")).group(1)
    assert tuple(listed.split(",")) == KIND_CHOICES


def test_every_flag_the_readme_gives_a_command_exists():
    checked = 0
    for command, text in mentions():
        parser = parser_for(command)
        if parser is None:
            continue  # prose such as "shrinkbench is"
        for flag in FLAG.findall(text):
            assert flag in options(parser), f"README: `{command} ... {flag}` does not exist"
            checked += 1
    assert checked > 20


def field_path_problem(path: list[str]) -> str | None:
    """Why ``-p a.b.c`` does not name a config field or component parameter (None: it does)."""
    registry = get_registry()
    kinds = {"strategy": "strategies", "dataset": "datasets", "model": "models"}
    head, rest = path[0], path[1:]
    if head not in ExperimentConfig.model_fields:
        return f"{head} is not a config field"
    if head == "metrics" and rest:
        specs = [s for s in registry.specs("metrics") if s.name == rest[0]]
        if not specs or (len(rest) > 1 and rest[-1] not in specs[0].parameters.model_fields):
            return "no such metric parameter"
        return None
    if head in kinds and len(rest) == 1:
        section_model = ExperimentConfig.model_fields[head].annotation
        known = set(section_model.model_fields)
        for spec in registry.specs(kinds[head]):
            known |= set(spec.parameters.model_fields)
        return None if rest[0] in known else f"{rest[0]} is neither a field nor a parameter"
    model: type[BaseModel] = ExperimentConfig
    for part in path:
        fields = model.model_fields
        if part not in fields:
            return f"{part} is not a field of {model.__name__}"
        annotation = fields[part].annotation
        model = annotation if isinstance(annotation, type) and issubclass(
            annotation, BaseModel) else BaseModel  # fmt: skip
    return None


def test_every_p_key_the_readme_names_exists():
    keys = set(re.findall(r"-p ([a-z_][a-z_.]*)=", README)) - {"key"}  # "-p key=value"
    assert len(keys) > 10
    problems = {key: field_path_problem(key.split(".")) for key in keys}
    assert {k: v for k, v in problems.items() if v} == {}


@pytest.mark.parametrize("field", sorted(ExperimentConfig.model_fields))
def test_every_config_section_is_documented(field):
    pattern = rf"(`|-p |\[|\{{){re.escape(field)}(`|\.|=| =|\]|,)"
    assert re.search(pattern, README), f"the README never names the config field `{field}`"


def test_help_states_the_defaults_of_a_bare_run(capsys):
    defaults = ExperimentConfig()
    with pytest.raises(SystemExit):
        subparsers()["run"].parse_args(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"default: {defaults.strategy.name}" in text
    assert f"(default: {defaults.compression:g})" in text
    assert f"default: {defaults.dataset.name}" in text and f"default: {defaults.model.name}" in text
    prose = " ".join(section("Command line").split())
    assert f"`{defaults.strategy.name}` at compression {defaults.compression:g}" in prose
