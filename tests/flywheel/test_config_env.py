"""Every setting has an environment form (issue 11, section 6): the README's examples load,
numbers reach integer Literal settings, and a bad value is one ``error:`` line per key."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, get_args

import pytest
from pydantic import BaseModel

from flywheel.config import (
    CONFIG_ENV_VAR,
    ENV_NESTED_DELIMITER,
    ENV_PREFIX,
    Settings,
    SettingsError,
    _is_int_literal,
    load_settings,
)

ROOT = Path(__file__).resolve().parents[2]
# Environment variables the README names that are not settings.
NOT_SETTINGS = {CONFIG_ENV_VAR, "FLYWHEEL_SCREENSHOTS"}


def readme_env_examples() -> list[tuple[str, str]]:
    text = (ROOT / "README.md").read_text()
    found = re.findall(r"\b(FLYWHEEL_[A-Z0-9_]+)=([^\s`|]+)", text)
    return sorted({(k, v) for k, v in found if k not in NOT_SETTINGS})


def setting(settings: Settings, env_name: str) -> Any:
    value: Any = settings
    for part in env_name.removeprefix(ENV_PREFIX).lower().split(ENV_NESTED_DELIMITER):
        value = getattr(value, part)
    return value


@pytest.fixture(autouse=True)
def _no_config_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CONFIG_ENV_VAR, raising=False)


def test_the_readme_shows_environment_forms() -> None:
    names = {k for k, _ in readme_env_examples()}
    assert len(names) >= 8, names  # the pattern below still finds them
    assert "FLYWHEEL_TRIGGERS__FEEDBACK_COUNT" in names


@pytest.mark.parametrize(("name", "raw"), readme_env_examples())
def test_every_environment_form_in_the_readme_loads(
    monkeypatch: pytest.MonkeyPatch, name: str, raw: str
) -> None:
    monkeypatch.setenv(name, raw)
    got = setting(load_settings(), name)
    assert got == type(got)(raw)  # "8" arrived as 8.0, "/srv/x" as Path("/srv/x")


def _int_options(annotation: object) -> list[int]:
    """The integers of a Literal, also inside ``Literal[...] | None``."""
    args = get_args(annotation)
    if all(type(a) is int for a in args):
        return list(args)
    return [option for a in args if a is not type(None) for option in _int_options(a)]


def _int_literal_fields() -> list[tuple[str, int]]:
    cases = []
    for section, field in Settings.model_fields.items():
        model = field.annotation
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            continue
        for name, sub in model.model_fields.items():
            if _is_int_literal(sub.annotation):
                env = f"{ENV_PREFIX}{section}{ENV_NESTED_DELIMITER}{name}".upper()
                cases += [(env, option) for option in _int_options(sub.annotation)]
    return cases


def test_learning_channels_is_among_the_integer_literal_settings() -> None:
    assert ("FLYWHEEL_LEARNING__CHANNELS", 3) in _int_literal_fields()


@pytest.mark.parametrize(("name", "option"), _int_literal_fields())
def test_numbers_from_the_environment_reach_integer_literal_settings(
    monkeypatch: pytest.MonkeyPatch, name: str, option: int
) -> None:
    monkeypatch.setenv(name, f"{option}")
    assert setting(load_settings(), name) == option
    monkeypatch.setenv(name, f" {option} ")  # as a shell or an env file may leave it
    assert setting(load_settings(), name) == option


def test_yaml_and_keywords_keep_their_types(tmp_path: Path) -> None:
    cfg = tmp_path / "s.yaml"
    cfg.write_text("learning: {channels: 3, resize: pad}\n")
    assert load_settings(cfg).learning.channels == 3
    assert Settings(learning={"channels": "3"}).learning.channels == 3  # same rule, any source


@pytest.mark.parametrize("bad", ["5", "three", "3.0", ""])
def test_a_bad_value_names_the_key_and_the_allowed_values(
    monkeypatch: pytest.MonkeyPatch, bad: str
) -> None:
    monkeypatch.setenv("FLYWHEEL_LEARNING__CHANNELS", bad)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    [line] = caught.value.problems
    assert line.startswith("setting learning.channels (FLYWHEEL_LEARNING__CHANNELS): ")
    assert "1 or 3" in line and "\n" not in line


@pytest.mark.parametrize("command", [["cycle", "run"], ["serve"], ["worker"]])
def test_the_cli_prints_one_error_line_per_bad_key(tmp_path: Path, command: list[str]) -> None:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)},
        "FLYWHEEL_LEARNING__CHANNELS": "5",
        "FLYWHEEL_WEB__SESSION_HOURS": "soon",
        "COLUMNS": "60",  # narrower than the lines: they must not wrap
    }
    proc = subprocess.run(
        [sys.executable, "-c", "from flywheel.cli import main; main()",
         "--data-dir", str(tmp_path), *command],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 2 and all(line.startswith("error: setting ") for line in lines), lines
    assert "learning.channels" in lines[0] and "1 or 3" in lines[0]
    assert "web.session_hours" in lines[1] and "number" in lines[1]
    assert not (tmp_path / "flywheel.db").exists()  # nothing was started or written
