"""Loading the code location stays cheap: every `dagster` and `bikeshare` command and every
code-server reload imports `bikeshare_assets.definitions`, so the heavy libraries (model
training, MLflow, AWS, plotting, reports) must be imported where they are used, not there.

A correctness test, not a timing test: it asserts which modules a fresh interpreter has
loaded. The time itself is a benchmark (`bench_startup.py`, docs/performance.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bikeshare_assets_tests.conftest import REPO

# Packages (and sub-packages: "holidays.countries" is every country's calendar, while the
# registry of their codes is cheap) that cost from ~0.1 s (pyarrow) to ~1.8 s (scikit-learn)
# each to import.
HEAVY_PACKAGES = (
    "sklearn",
    "scipy",
    "mlflow",
    "lightgbm",
    "optuna",
    "optuna_integration",
    "matplotlib",
    "evidently",
    "sagemaker",
    "dagster_aws",
    "dagster_mlflow",
    "boto3",
    "botocore",
    "s3fs",
    "meteostat",
    "streamlit",
    "slack_sdk",
    "dagster_slack",
    # the data contract's pandera schemas and dagster-pandera types are built on first use
    "pandera",
    "dagster_pandera",
    "pandas",
    "pyarrow",
    "holidays.countries",
)

PROBE = """
import json, sys
import {module}
heavy = set({heavy!r})
loaded = {{m for m in sys.modules for h in heavy if m == h or m.startswith(h + ".")}}
print(json.dumps(sorted(loaded)))
"""


def _loaded_heavy_modules(module: str, home: Path) -> list[str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "PYTHONWARNINGS": "ignore",
        "BIKESHARE_HOME": str(home),
    }
    env.pop("BIKESHARE_CITIES_FILE", None)
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(module=module, heavy=HEAVY_PACKAGES)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _packages(modules: list[str]) -> list[str]:
    return sorted({h for m in modules for h in HEAVY_PACKAGES if m == h or m.startswith(h + ".")})


@pytest.mark.parametrize(
    "deployment_env",
    [{}, {"BIKESHARE_SOURCE": "live"}],
    ids=["replay", "live"],
)
def test_loading_the_definitions_imports_no_heavy_library(tmp_path, monkeypatch, deployment_env):
    for name, value in deployment_env.items():
        monkeypatch.setenv(name, value)
    loaded = _loaded_heavy_modules("bikeshare_assets.definitions", tmp_path)
    assert loaded == [], (
        "importing bikeshare_assets.definitions loaded heavy modules; import them inside the "
        f"functions that use them: {_packages(loaded)}"
    )


def test_the_cli_module_imports_neither_dagster_nor_heavy_libraries(tmp_path):
    """`bikeshare env` and `--help` answer at once; each command imports what it needs."""
    loaded = _loaded_heavy_modules("bikeshare_assets.cli", tmp_path)
    assert loaded == []
    probe = "import sys, bikeshare_assets.cli; print('dagster' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", probe],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "False"
