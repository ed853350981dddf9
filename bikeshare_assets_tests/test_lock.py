"""Reproducible installs: constraints.txt pins exactly what `pip install -e '.[dev]'`
installs, `make venv` installs with it, and CI checks lint and formatting before the tests."""

from __future__ import annotations

import re
import subprocess
import sys

from bikeshare_assets_tests.conftest import REPO


def test_constraints_pin_exactly_the_installed_closure_of_pyproject():
    """Fails when pyproject.toml or the venv moved on without `make lock` (or when the lock
    names a package the project does not install)."""
    expected = subprocess.run(
        [sys.executable, str(REPO / ".ci" / "lock.py")],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    pinned = (REPO / "constraints.txt").read_text(encoding="utf-8")
    assert pinned == expected, (
        "constraints.txt is not what the venv installs for pyproject.toml: run "
        "`.venv/bin/python .ci/lock.py > constraints.txt` (or `make lock`) and commit it"
    )
    names = [line.split("==")[0] for line in pinned.splitlines() if "==" in line]
    assert {"dagster", "mlflow", "polars", "s3fs", "pytest", "ruff"} <= set(names)
    assert "bikeshare-assets" not in names


def test_make_venv_installs_the_pinned_versions():
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    target = re.search(r"^\$\(VENV\)/\.installed:(.*?)\n\n", makefile, re.M | re.S)
    assert target is not None
    assert "constraints.txt" in target.group(1).splitlines()[0]  # reinstalls when it changes
    assert "pip install --quiet -e '.[dev]' -c constraints.txt" in target.group(1)


def test_ci_checks_lint_and_format_before_the_tests():
    steps = [
        line.strip()
        for line in (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
        if line.startswith("make ")
    ]
    assert steps == ["make lint", "make test"]
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    lint = makefile.split("\nlint:", 1)[1].split("\n\n", 1)[0]
    assert "ruff check ." in lint and "ruff format --check ." in lint
