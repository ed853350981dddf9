"""Bad configuration fails when it is loaded, in one line that names the file, the city and
the key: through `dagster definitions validate` and through `bikeshare`, as a user runs them
(subprocesses on temporary cities files)."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest

from bikeshare_assets_tests.conftest import REPO, VENV_BIN, replay_table, write_cities

# name -> (writes the cities file into a folder, extra environment, texts the error must name)
Case = tuple[Callable[[Path, Path], Path], dict[str, str], list[str]]


def _syntax_error(folder: Path, recording: Path) -> Path:
    path = write_cities(folder / "cities.toml", replay=replay_table(recording))
    path.write_text(path.read_text().replace("latitude = 48.8566", "latitude = 48.8566 ,"))
    return path


def _without(key: str) -> Callable[[Path, Path], Path]:
    def write(folder: Path, recording: Path) -> Path:
        path = write_cities(folder / "cities.toml", replay=replay_table(recording))
        lines = path.read_text().splitlines()
        path.write_text("\n".join(x for x in lines if not x.startswith(f"{key} =")) + "\n")
        return path

    return write


def _city(**values) -> Callable[[Path, Path], Path]:
    return lambda folder, recording: write_cities(
        folder / "cities.toml", replay=replay_table(recording), **values
    )


def _missing_recording(folder: Path, recording: Path) -> Path:
    return write_cities(folder / "cities.toml", replay=replay_table(folder / "nope.parquet"))


def _recording_without_docks(folder: Path, recording: Path) -> Path:
    broken = folder / "no_docks.parquet"
    pl.read_parquet(recording).drop("nb_bornes_bin").head(100).write_parquet(broken)
    return write_cities(folder / "cities.toml", replay=replay_table(broken))


def _live_without_start(folder: Path, recording: Path) -> Path:
    return _without("live_start")(folder, recording)


CASES: dict[str, Case] = {
    "toml_syntax": (_syntax_error, {}, ["cities.toml", "not valid TOML", "line 7"]),
    "missing_timezone": (_without("timezone"), {}, ["cities.toml", "[cities.paris] timezone"]),
    "cadence_7": (
        _city(cadence_minutes=7),
        {},
        ["cities.toml", "[cities.paris] cadence_minutes = 7 must divide 60"],
    ),
    "drift_window_off_cadence": (
        _city(drift_window_minutes=20),
        {},
        ["cities.toml", "[cities.paris] drift_window_minutes = 20 must be a multiple", "15 min"],
    ),
    "misspelled_key": (
        _city(timezon="Europe/Paris"),
        {},
        ["cities.toml", "[cities.paris] timezon", 'did you mean "timezone"'],
    ),
    "unknown_timezone": (
        _city(timezone="Europe/Pariss"),
        {},
        ["cities.toml", "[cities.paris] timezone", 'did you mean "Europe/Paris"'],
    ),
    "unknown_country": (
        _city(country="QQ"),
        {},
        ["cities.toml", "[cities.paris] country", "holidays"],
    ),
    "missing_recording": (
        _missing_recording,
        {},
        ["cities.toml", "[cities.paris.replay] status_path", "nope.parquet", "does not exist"],
    ),
    "recording_without_a_column": (
        _recording_without_docks,
        {},
        ["[cities.paris.replay] status_path", "no_docks.parquet", "['nb_bornes_bin']"],
    ),
    "live_without_live_start": (
        _live_without_start,
        {"BIKESHARE_SOURCE": "live"},
        ["cities.toml", "[cities.paris] live_start is missing"],
    ),
    "unknown_source": (_city(), {"BIKESHARE_SOURCE": "kafka"}, ["BIKESHARE_SOURCE='kafka'"]),
    "prod_without_s3": (
        _city(),
        {"BIKESHARE_DEPLOYMENT": "prod", "BIKESHARE_SOURCE": "replay"},
        ["BIKESHARE_DEPLOYMENT=prod", "BIKESHARE_STORAGE_ROOT=s3://"],
    ),
}


def run(command: list[str], env: dict[str, str], home: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        command,
        cwd=REPO,
        env={
            **os.environ,
            "BIKESHARE_HOME": str(home),
            "DAGSTER_HOME": str(home / "dagster_home"),
            **env,
        },
        capture_output=True,
        text=True,
        timeout=240,
    )


@pytest.fixture(params=sorted(CASES))
def bad_config(request, tmp_path: Path, day_recording_path: Path) -> tuple[dict[str, str], list]:
    write, env, names = CASES[request.param]
    (tmp_path / "config").mkdir()
    cities = write(tmp_path / "config", day_recording_path)
    return {"BIKESHARE_CITIES_FILE": str(cities), **env}, names


def test_bikeshare_prints_one_line_naming_file_city_and_key(bad_config, home: Path) -> None:
    env, names = bad_config

    proc = run([str(VENV_BIN / "bikeshare"), "demo", "--until", "raw"], env, home)

    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) <= 2, proc.stderr
    for name in names:
        assert name in lines[0], f"{name!r} not in {lines[0]!r}"
    assert "--debug" in lines[-1]  # says how to see more


@pytest.mark.parametrize("switch", [["--debug", "demo"], ["demo", "--debug"], ["demo"]])
def test_debug_shows_the_traceback(switch: list[str], tmp_path: Path, home: Path) -> None:
    cities = write_cities(tmp_path / "cities.toml", timezone="Mars/Olympus")
    env = {"BIKESHARE_CITIES_FILE": str(cities)}
    if switch == ["demo"]:
        env["BIKESHARE_DEBUG"] = "1"

    proc = run([str(VENV_BIN / "bikeshare"), *switch, "--until", "raw"], env, home)

    assert proc.returncode != 0
    assert "Traceback" in proc.stderr
    assert "ConfigError: " in proc.stderr and '"Mars/Olympus"' in proc.stderr


def test_dagster_definitions_validate_fails_with_the_same_message(bad_config, home: Path) -> None:
    env, names = bad_config
    (home / "dagster_home").mkdir(parents=True)
    command = ["definitions", "validate", "-m", "bikeshare_assets.definitions"]

    proc = run([str(VENV_BIN / "dagster"), *command], env, home)

    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    message = next(x for x in output.splitlines() if "ConfigError" in x)
    for name in names:
        assert name in message, f"{name!r} not in {message!r}"


def test_every_key_is_documented_with_its_default_in_the_shipped_cities_file() -> None:
    from bikeshare_assets.cities import CITY_KEYS, DEFAULT_CITIES_FILE, REPLAY_KEYS, SIMULATE_KEYS

    text = DEFAULT_CITIES_FILE.read_text(encoding="utf-8")
    for table, keys in (("", CITY_KEYS), (".replay", REPLAY_KEYS), (".simulate", SIMULATE_KEYS)):
        section = text[text.index(f"# [cities.<key>{table}]") :]
        for key, (default, _) in keys.items():
            line = re.search(rf"^#\s+{key}\s+(\S.*)$", section, re.M)
            assert line, f"{key} ({table or 'city'}) is not documented in {DEFAULT_CITIES_FILE}"
            if isinstance(default, int | float):
                assert line.group(1).startswith(str(default)), (key, line.group(0))


def test_the_holiday_countries_accepted_are_exactly_those_holidays_supports() -> None:
    """cities.py reads the codes from holidays' registry instead of importing every country's
    calendar (`list_supported_countries()`); both must accept the same codes and aliases."""
    import holidays

    from bikeshare_assets.cities import holiday_country_codes

    assert holiday_country_codes() == set(holidays.list_supported_countries())
    assert {"FR", "FRA", "GB", "UK", "MX", "US"} <= holiday_country_codes()
