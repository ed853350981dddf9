"""The only module that reads or sets environment variables.

Everything that differs between a laptop and AWS is decided here, once, from
BIKESHARE_DEPLOYMENT and a handful of overrides; the rest of the code receives a Settings.
The few places that must touch the process environment (the CLI pointing Dagster at its
instance, the scoring server's child process) call the helpers at the end of this module.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from bikeshare_assets.cities import DEFAULT_CITIES_FILE, City, SourceMode, load_cities
from bikeshare_assets.errors import ConfigError


class Deployment(StrEnum):
    LOCAL = "local"
    STAGING = "staging"
    PROD = "prod"


# (variable, default, what it does): the one list of the variables the project reads. Printed
# by `bikeshare env`; the tables in README.md and docs/cicd.md are generated from it
# (`make docs`), and test_docs.py checks the defaults against get_settings.
ENVIRONMENT_VARIABLES: tuple[tuple[str, str, str], ...] = (
    (
        "BIKESHARE_DEPLOYMENT",
        "local",
        "local | staging | prod: picks storage, data source, schedules and endpoint",
    ),
    ("BIKESHARE_HOME", "./.bikeshare", "local data lake, quarantine, MLflow SQLite, Dagster home"),
    ("BIKESHARE_SOURCE", "replay (local), live (staging/prod)", "replay | live | simulate"),
    ("BIKESHARE_CITIES", "every city the source supports", "comma-separated city keys"),
    (
        "BIKESHARE_CITIES_FILE",
        "the package's cities.toml",
        "your own cities (or your own recording to replay)",
    ),
    (
        "BIKESHARE_STORAGE_ROOT",
        "$BIKESHARE_HOME/lake",
        "local folder or s3://bucket/prefix (an s3:// root is required outside local)",
    ),
    ("BIKESHARE_S3_ENDPOINT_URL", "(AWS)", "S3-compatible endpoint, e.g. a moto or MinIO server"),
    ("BIKESHARE_HTTP_TIMEOUT_S", "10", "GBFS / weather request timeout in seconds"),
    ("BIKESHARE_HTTP_RETRIES", "3", "retries with exponential backoff before a feed is dead"),
    ("BIKESHARE_METEOSTAT_URL", "(Meteostat's own)", "base URL of the Meteostat data service"),
    (
        "MLFLOW_TRACKING_URI",
        "sqlite:///$BIKESHARE_HOME/mlflow/mlflow.db",
        "MLflow tracking + registry (outside local a tracking server: SQLite is refused)",
    ),
    (
        "BIKESHARE_MLFLOW_ARTIFACTS",
        "$BIKESHARE_HOME/mlflow/artifacts",
        "artifact root for new experiments",
    ),
    (
        "BIKESHARE_ENDPOINT",
        "local (local), sagemaker (staging/prod)",
        "where the champion is served: local | sagemaker",
    ),
    ("BIKESHARE_ENDPOINT_PORTS", "8080,8081", "local blue/green ports on 127.0.0.1"),
    ("BIKESHARE_ENDPOINT_TIMEOUT_S", "2", "per-request timeout before predictions fall back"),
    (
        "BIKESHARE_SAGEMAKER_IMAGE",
        "(the account's mlflow-pyfunc image in the region)",
        "scoring image (mlflow sagemaker build-and-push-container)",
    ),
    ("BIKESHARE_SAGEMAKER_ROLE_ARN", "", "execution role of the SageMaker model (required there)"),
    ("BIKESHARE_SAGEMAKER_BUCKET", "(the lake's bucket)", "bucket for model.tar.gz"),
    ("BIKESHARE_SAGEMAKER_ENDPOINT_URL", "(AWS)", "SageMaker API endpoint, e.g. a moto server"),
    (
        "BIKESHARE_SAGEMAKER_CANARY_WEIGHT",
        "0",
        "share of traffic a new bundle gets beside the live one "
        "(`bikeshare endpoint-rollback --city <city>` undoes a deploy)",
    ),
    ("AWS_DEFAULT_REGION", "eu-west-3", "AWS region for S3 and SageMaker"),
    ("DAGSTER_HOME", "$BIKESHARE_HOME/dagster_home", "Dagster instance (SQLite locally)"),
    ("BIKESHARE_DEBUG", "0", "1: `bikeshare` shows tracebacks, not one-line errors"),
    (
        "BIKESHARE_SLACK_TOKEN",
        "",
        "Slack bot token (chat:write): alerts via the Web API; never printed",
    ),
    ("BIKESHARE_SLACK_CHANNEL", "#bikeshare-alerts", "channel the bot token posts alerts to"),
    (
        "BIKESHARE_SLACK_WEBHOOK_URL",
        "",
        "Slack incoming-webhook URL, used when no token is set; never printed",
    ),
    ("BIKESHARE_SLACK_API_URL", "(Slack's own)", "Slack Web API base URL, e.g. a local stand-in"),
    (
        "BIKESHARE_DAGSTER_UI_URL",
        "http://127.0.0.1:3000",
        "Dagster UI base URL for the links in alerts",
    ),
)

# Values `bikeshare env` and logs must never show: only whether they are set.
SECRET_ENVIRONMENT_VARIABLES = frozenset({"BIKESHARE_SLACK_TOKEN", "BIKESHARE_SLACK_WEBHOOK_URL"})


def debug_enabled(environ: Mapping[str, str] | None = None) -> bool:
    """BIKESHARE_DEBUG=1: the CLI re-raises user errors with their traceback. Read apart from
    get_settings because it must work when the settings themselves are broken."""
    env = os.environ if environ is None else environ
    return env.get("BIKESHARE_DEBUG", "").strip().lower() in ("1", "true", "yes")


@dataclass(frozen=True)
class Settings:
    deployment: Deployment
    home: Path
    source: SourceMode
    cities: dict[str, City]
    storage_root: str
    s3_endpoint_url: str | None
    http_timeout_s: float
    http_retries: int
    meteostat_url: str | None
    dagster_home: Path
    mlflow_tracking_uri: str
    mlflow_artifact_root: str
    endpoint_kind: str
    endpoint_ports: tuple[int, int]
    endpoint_timeout_s: float
    sagemaker_image: str
    sagemaker_role_arn: str
    sagemaker_bucket: str
    sagemaker_endpoint_url: str | None
    sagemaker_canary_weight: float
    aws_region: str
    # Alerts (automation/alerts.py). The two secrets stay out of repr and logs.
    slack_token: str = field(default="", repr=False)
    slack_channel: str = "#bikeshare-alerts"
    slack_webhook_url: str = field(default="", repr=False)
    slack_api_url: str | None = None
    dagster_ui_url: str = "http://127.0.0.1:3000"

    @property
    def alerts_file(self) -> Path:
        """Where every alert is also written: the record when Slack is not set or fails."""
        return self.home / "alerts" / "alerts.jsonl"

    @property
    def quarantine_root(self) -> str:
        return _join(self.storage_root, "quarantine")

    @property
    def runs_itself(self) -> bool:
        """Schedules, automation and sensors start RUNNING in live mode and on staging/prod;
        the embedded replay is driven by hand (`bikeshare demo`, the CLI), so they start
        stopped there and a user can turn them on in the UI."""
        return self.source is SourceMode.LIVE or self.deployment is not Deployment.LOCAL


def _join(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *parts])


def get_settings(environ: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if environ is None else environ
    try:
        deployment = Deployment(env.get("BIKESHARE_DEPLOYMENT", "local").strip().lower())
    except ValueError as exc:
        raise ConfigError(
            f"BIKESHARE_DEPLOYMENT={env.get('BIKESHARE_DEPLOYMENT')!r} is not one of "
            "local, staging, prod."
        ) from exc
    home = Path(env.get("BIKESHARE_HOME", ".bikeshare")).expanduser().resolve()
    default_source = SourceMode.REPLAY if deployment is Deployment.LOCAL else SourceMode.LIVE
    try:
        source = SourceMode(env.get("BIKESHARE_SOURCE", default_source).strip().lower())
    except ValueError as exc:
        raise ConfigError(
            f"BIKESHARE_SOURCE={env.get('BIKESHARE_SOURCE')!r} is not one of "
            "replay, live, simulate."
        ) from exc

    cities_file = Path(env.get("BIKESHARE_CITIES_FILE") or DEFAULT_CITIES_FILE)
    all_cities = load_cities(cities_file)
    wanted = [c.strip() for c in env.get("BIKESHARE_CITIES", "").split(",") if c.strip()]
    unknown = sorted(set(wanted) - set(all_cities))
    if unknown:
        raise ConfigError(
            f"BIKESHARE_CITIES names {unknown}, which {cities_file} does not define; "
            f"known cities: {sorted(all_cities)}."
        )
    chosen = {k: c for k, c in all_cities.items() if (k in wanted if wanted else True)}
    unsupported = [k for k, c in chosen.items() if not c.supports(source)]
    if wanted and unsupported:
        raise ConfigError(
            f"cities {unsupported} have no [{source}] configuration in {cities_file}; "
            f"add one or pick another BIKESHARE_SOURCE."
        )
    chosen = {k: c for k, c in chosen.items() if c.supports(source)}
    no_start = [k for k, c in chosen.items() if source is SourceMode.LIVE and not c.live_start]
    if no_start:
        raise ConfigError(
            f"{cities_file}: [cities.{no_start[0]}] live_start is missing; live mode needs the "
            'first live partition, e.g. live_start = "2026-11-01-00:00" (UTC, about now).'
        )

    storage_root = env.get("BIKESHARE_STORAGE_ROOT") or str(home / "lake")
    dagster_home = Path(env.get("DAGSTER_HOME") or home / "dagster_home").expanduser().resolve()
    return Settings(
        deployment=deployment,
        home=home,
        source=source,
        cities=chosen,
        storage_root=storage_root,
        s3_endpoint_url=env.get("BIKESHARE_S3_ENDPOINT_URL") or None,
        http_timeout_s=_number(env, "BIKESHARE_HTTP_TIMEOUT_S", "10", float),
        http_retries=_number(env, "BIKESHARE_HTTP_RETRIES", "3", int),
        meteostat_url=env.get("BIKESHARE_METEOSTAT_URL") or None,
        dagster_home=dagster_home,
        mlflow_tracking_uri=env.get("MLFLOW_TRACKING_URI")
        or f"sqlite:///{home / 'mlflow' / 'mlflow.db'}",
        mlflow_artifact_root=env.get("BIKESHARE_MLFLOW_ARTIFACTS")
        or str(home / "mlflow" / "artifacts"),
        endpoint_kind=_choice(
            env,
            "BIKESHARE_ENDPOINT",
            "local" if deployment is Deployment.LOCAL else "sagemaker",
            ("local", "sagemaker"),
        ),
        endpoint_ports=_ports(env.get("BIKESHARE_ENDPOINT_PORTS", "8080,8081")),
        endpoint_timeout_s=_number(env, "BIKESHARE_ENDPOINT_TIMEOUT_S", "2", float),
        sagemaker_image=env.get("BIKESHARE_SAGEMAKER_IMAGE", ""),
        sagemaker_role_arn=env.get("BIKESHARE_SAGEMAKER_ROLE_ARN", ""),
        sagemaker_bucket=env.get("BIKESHARE_SAGEMAKER_BUCKET")
        or (storage_root[len("s3://") :].split("/")[0] if storage_root.startswith("s3://") else ""),
        sagemaker_endpoint_url=env.get("BIKESHARE_SAGEMAKER_ENDPOINT_URL") or None,
        sagemaker_canary_weight=_number(env, "BIKESHARE_SAGEMAKER_CANARY_WEIGHT", "0", float),
        aws_region=env.get("AWS_DEFAULT_REGION", "eu-west-3"),
        slack_token=env.get("BIKESHARE_SLACK_TOKEN", "").strip(),
        slack_channel=env.get("BIKESHARE_SLACK_CHANNEL") or "#bikeshare-alerts",
        slack_webhook_url=env.get("BIKESHARE_SLACK_WEBHOOK_URL", "").strip(),
        slack_api_url=env.get("BIKESHARE_SLACK_API_URL") or None,
        dagster_ui_url=(env.get("BIKESHARE_DAGSTER_UI_URL") or "http://127.0.0.1:3000").rstrip("/"),
    )


def environment_value(name: str) -> str | None:
    """The variable's current value (None when unset), for `bikeshare env`."""
    return os.environ.get(name)


def use_dagster_home(dagster_home: Path) -> None:
    """Point this process (and the Dagster runs it launches) at the instance in dagster_home."""
    os.environ["DAGSTER_HOME"] = str(dagster_home)


def settings_for_source(source: str) -> Settings:
    """This environment's settings with BIKESHARE_SOURCE replaced (`bikeshare live` reads the
    champion and the demo's features through the replay's settings)."""
    return get_settings({**os.environ, "BIKESHARE_SOURCE": source})


def live_environment(
    settings: Settings, *, cities_file: Path, meteostat_url: str, live_home: Path
) -> dict[str, str]:
    """The environment of `bikeshare live`'s pipeline: this one, switched to live mode against
    the local feed (its cities file and Meteostat stand-in), with its own Dagster instance
    under `live_home` unless DAGSTER_HOME is set. BIKESHARE_HOME stays, so the MLflow registry
    and the lake are the ones `bikeshare demo` wrote."""
    env = dict(os.environ)
    env.update(
        BIKESHARE_HOME=str(settings.home),
        BIKESHARE_SOURCE="live",
        BIKESHARE_CITIES_FILE=str(cities_file),
        BIKESHARE_METEOSTAT_URL=meteostat_url,
        DAGSTER_HOME=os.environ.get("DAGSTER_HOME") or str(live_home / "dagster_home"),
    )
    env.pop("BIKESHARE_CITIES", None)
    return env


def quiet_mlflow_for_terminal() -> None:
    """A terminal tool: MLflow's per-download progress bars and INFO lines drown the summary.
    MLflow reads these when it is first imported, so call this before importing it."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")


def child_process_environment(bin_dir: Path) -> dict[str, str]:
    """This process's environment for a child process, with `bin_dir` first on PATH (the
    scoring server needs the venv's uvicorn)."""
    env = dict(os.environ)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    return env


def _choice(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = env.get(name, default).strip().lower()
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} is not one of {', '.join(allowed)}.")
    return value


def _ports(value: str) -> tuple[int, int]:
    try:
        blue, green = (int(p) for p in value.split(","))
    except ValueError as exc:
        raise ConfigError(
            f"BIKESHARE_ENDPOINT_PORTS={value!r}: expected two ports, e.g. 8080,8081."
        ) from exc
    return blue, green


def _number(env: Mapping[str, str], name: str, default: str, kind: type[int] | type[float]):
    value = env.get(name, default)
    try:
        return kind(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not a number ({kind.__name__}).") from None
