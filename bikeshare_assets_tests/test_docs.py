"""The docs say what the code does: generated tables are current, documented defaults and
constants are the code's, and the one module said to read the environment is the only one.
Each test fails when a value drifts on one side only."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from bikeshare_assets.settings import ENVIRONMENT_VARIABLES, get_settings
from bikeshare_assets_tests import docs_sync
from bikeshare_assets_tests.conftest import REPO

PACKAGE = REPO / "bikeshare_assets"
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def test_generated_doc_tables_match_the_code():
    assert docs_sync.stale_sections() == [], "run `make docs` and commit the result"


def test_a_stale_generated_table_is_detected(tmp_path):
    """The check itself can fail: an edited default in a copy of the docs is reported."""
    for rel in {rel for _, files in docs_sync.SECTIONS.values() for rel in files}:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text((REPO / rel).read_text(encoding="utf-8"), encoding="utf-8")
    readme = tmp_path / "README.md"
    readme.write_text(
        readme.read_text(encoding="utf-8").replace(
            "| `BIKESHARE_HTTP_RETRIES` | `3` |", "| `BIKESHARE_HTTP_RETRIES` | `5` |"
        ),
        encoding="utf-8",
    )
    automation = tmp_path / "docs/automation.md"
    automation.write_text(
        automation.read_text(encoding="utf-8").replace("warn 6 min, fail 8 min", "fail 15 min"),
        encoding="utf-8",
    )
    assert docs_sync.stale_sections(tmp_path) == [
        "README.md: env-table",
        "docs/automation.md: automation-policies",
    ]


def _home_relative(default: str, home: Path) -> str:
    return default.replace("$BIKESHARE_HOME", str(home))


def test_documented_environment_defaults_are_what_get_settings_uses(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the documented home default is relative: ./.bikeshare
    documented = {name: default for name, default, _ in ENVIRONMENT_VARIABLES}
    local = get_settings({})
    staging = get_settings({"BIKESHARE_DEPLOYMENT": "staging"})
    home = (tmp_path / ".bikeshare").resolve()
    assert local.home == home and documented["BIKESHARE_HOME"] == "./.bikeshare"
    assert str(local.deployment) == documented["BIKESHARE_DEPLOYMENT"]
    assert local.storage_root == _home_relative(documented["BIKESHARE_STORAGE_ROOT"], home)
    assert local.mlflow_tracking_uri == _home_relative(documented["MLFLOW_TRACKING_URI"], home)
    assert local.mlflow_artifact_root == _home_relative(
        documented["BIKESHARE_MLFLOW_ARTIFACTS"], home
    )
    assert str(local.dagster_home) == _home_relative(documented["DAGSTER_HOME"], home)
    assert local.http_timeout_s == float(documented["BIKESHARE_HTTP_TIMEOUT_S"])
    assert local.http_retries == int(documented["BIKESHARE_HTTP_RETRIES"])
    assert ",".join(map(str, local.endpoint_ports)) == documented["BIKESHARE_ENDPOINT_PORTS"]
    assert local.endpoint_timeout_s == float(documented["BIKESHARE_ENDPOINT_TIMEOUT_S"])
    assert local.sagemaker_canary_weight == float(documented["BIKESHARE_SAGEMAKER_CANARY_WEIGHT"])
    assert local.aws_region == documented["AWS_DEFAULT_REGION"]
    assert (
        documented["BIKESHARE_SOURCE"] == f"{local.source} (local), {staging.source} (staging/prod)"
    )
    assert (
        documented["BIKESHARE_ENDPOINT"]
        == f"{local.endpoint_kind} (local), {staging.endpoint_kind} (staging/prod)"
    )


def _variables_read_by_settings() -> set[str]:
    """Every environment variable name settings.py passes to env.get / _choice."""
    tree = ast.parse((PACKAGE / "settings.py").read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            for arg in node.args[:2]:
                if (
                    isinstance(arg, ast.Constant)
                    and isinstance(arg.value, str)
                    and re.fullmatch(r"(BIKESHARE|MLFLOW|AWS|DAGSTER)_[A-Z0-9_]+", arg.value)
                ):
                    names.add(arg.value)
    return names - {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "MLFLOW_LOGGING_LEVEL"}


def test_every_variable_settings_reads_is_documented():
    documented = {name for name, _, _ in ENVIRONMENT_VARIABLES}
    read = _variables_read_by_settings()
    assert read, "the scan found no variable: it no longer matches settings.py"
    assert read - documented == set(), "add them to ENVIRONMENT_VARIABLES, then `make docs`"
    assert documented - read == set(), "documented but never read"


def _environment_uses(path: Path) -> list[str]:
    """Lines of `path` that read or set the process environment directly."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in {"environ", "getenv", "putenv"}:
            found.append(f"{path.relative_to(REPO)}:{node.lineno} os.{node.attr}")
        elif isinstance(node, ast.ImportFrom) and node.module == "os":
            for alias in node.names:
                if alias.name in {"environ", "getenv", "putenv"}:
                    found.append(
                        f"{path.relative_to(REPO)}:{node.lineno} from os import {alias.name}"
                    )
    return found


def test_only_settings_reads_or_sets_environment_variables():
    """README and architecture.md say settings.py is the only module that does."""
    uses = [
        use
        for path in sorted(PACKAGE.rglob("*.py"))
        if path.name != "settings.py"
        for use in _environment_uses(path)
    ]
    assert uses == [], "move these into settings.py (see its helpers at the end)"
    assert _environment_uses(PACKAGE / "settings.py"), "the scan would not see a use"


# A number quoted as `NAME = value` in backticks in any doc names a module-level constant (or
# a config default, `Class.field = value`) of one of these modules and must equal it.
CONSTANT_MODULES = (
    "bikeshare_assets.ingest.contracts",
    "bikeshare_assets.ingest.schemas",
    "bikeshare_assets.ingest.gbfs",
    "bikeshare_assets.features.assets",
    "bikeshare_assets.features.compute",
    "bikeshare_assets.features.labels",
    "bikeshare_assets.monitoring.assets",
    "bikeshare_assets.monitoring.drift",
    "bikeshare_assets.registry.gate",
    "bikeshare_assets.training.assets",
    "bikeshare_assets.training.train",
    "bikeshare_assets.serving.client",
)
DOCUMENTED_CONSTANT = re.compile(
    r"`([A-Za-z_][A-Za-z0-9_]*(?:\.[a-z_][a-z0-9_]*)?) = (-?[0-9][0-9_.]*)`"
)


def _code_value(name: str):
    import importlib

    owner_name, _, field = name.partition(".")
    for module_name in CONSTANT_MODULES:
        module = importlib.import_module(module_name)
        if not hasattr(module, owner_name):
            continue
        owner = getattr(module, owner_name)
        if not field:
            return owner
        fields = getattr(owner, "model_fields", None)  # dagster Config / pydantic
        if fields and field in fields:
            return fields[field].default
        if hasattr(owner, field):
            return getattr(owner, field)
    raise LookupError(name)


def _documented_constants() -> list[tuple[str, str, str]]:
    found = []
    for path in DOCS:
        for match in DOCUMENTED_CONSTANT.finditer(path.read_text(encoding="utf-8")):
            found.append((path.name, match.group(1), match.group(2).strip()))
    return found


def test_docs_quote_constants_as_the_code_defines_them():
    documented = _documented_constants()
    assert len(documented) >= 8, "the scan no longer finds the documented constants"
    wrong = []
    for doc, name, text in documented:
        try:
            value = _code_value(name)
        except LookupError:
            wrong.append(f"{doc}: `{name}` is not a constant of {CONSTANT_MODULES}")
            continue
        if float(text) != float(value):
            wrong.append(f"{doc}: `{name} = {text}` but the code says {value!r}")
    assert wrong == []


@pytest.mark.parametrize("text", ["`MISSING_RATE_MAX = 0.06`", "`CAPACITY_PRESENT_MIN = 0.8`"])
def test_a_wrong_documented_constant_is_caught(text):
    match = DOCUMENTED_CONSTANT.search(text)
    assert match is not None
    assert float(match.group(2)) != float(_code_value(match.group(1)))
