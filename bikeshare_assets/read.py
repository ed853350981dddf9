"""The read side of the lake and the registry, for the dashboard (app/) and the CLI.

One place knows where materialized assets live (`<root>/<asset>/city=<city>/dt=<partition>/
part.parquet`, see storage.py), reads only the partitions and columns asked for, and caches
what it read until the file changes. Local reads need only polars: the dashboard's first
page must not pay for importing Dagster. S3 goes through the same `LakeStorage` the writers
use (imported on first use).

Every parquet file is checked against its SHA-256 sidecar (integrity.py, the same check the
pipeline's IO manager makes) before it is parsed.

Errors are for people: `LakeUnavailable` (the storage cannot be reached), `NotMaterialized`
(nothing there yet) and `CorruptPartitionError` (a file fails its checksum: names the file,
the partition and the command that rebuilds it) say what is wrong and what to run.
"""

from __future__ import annotations

import io
import json
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

from bikeshare_assets.automation.freshness import freshness_for
from bikeshare_assets.cities import PARTITION_FMT, City, SourceMode
from bikeshare_assets.integrity import (  # noqa: F401  (CorruptPartitionError: for readers' callers)
    CHECKSUM_SUFFIX,
    CorruptPartitionError,
    parse_parquet,
    verified_bytes,
)
from bikeshare_assets.settings import Settings

# asset -> (partition kind, allowed age of its newest partition beyond the partition's end,
# as a function of the snapshot cadence). Labels and outcomes of t exist only 30 minutes
# after t (label maturity), so they are allowed that much more.
SNAPSHOT, HOUR, DAY = "snapshot", "hour", "day"
ASSET_PARTITIONS: dict[str, str] = {
    "raw_station_information": DAY,
    "raw_station_status": SNAPSHOT,
    "raw_weather": HOUR,
    "station_features": SNAPSHOT,
    "stockout_labels": SNAPSHOT,
    "stockout_model": DAY,
    "registered_model_version": DAY,
    "model_endpoint": DAY,
    "stockout_predictions": SNAPSHOT,
    "prediction_outcomes": SNAPSHOT,
    "model_quality": DAY,
    "drift_report": HOUR,
}
MATURITY = timedelta(minutes=30)


def freshness_allowance(asset: str, cadence: timedelta) -> timedelta:
    """How old the newest partition of `asset` may be (after its window ended) before the
    dashboard calls it stale: the fail window of the asset's declared FreshnessPolicy
    (automation/freshness.py) where it has one; otherwise one more cadence plus a few minutes
    of run time for snapshot assets, the label horizon on top for labels and outcomes, a day
    for the daily station list and quality, two for the endpoint (it follows the daily model)."""
    declared = freshness_for(cadence).get(asset)
    if declared is not None:
        return declared.fail
    kind = ASSET_PARTITIONS[asset]
    if asset in ("stockout_labels", "prediction_outcomes"):
        return MATURITY + cadence + timedelta(minutes=10)
    if kind == SNAPSHOT:
        return cadence + timedelta(minutes=10)
    if kind == HOUR:
        return timedelta(hours=2)
    if asset == "model_endpoint":
        return timedelta(days=2)
    return timedelta(days=1)


def partition_window(asset: str, key: str, cadence: timedelta) -> tuple[datetime, datetime]:
    """[start, end) of a partition key (UTC), without building Dagster partitions."""
    kind = ASSET_PARTITIONS.get(asset, SNAPSHOT)
    if kind == DAY:
        start = datetime.strptime(key, "%Y-%m-%d").replace(tzinfo=UTC)
        return start, start + timedelta(days=1)
    start = datetime.strptime(key, PARTITION_FMT).replace(tzinfo=UTC)
    return start, start + (timedelta(hours=1) if kind == HOUR else cadence)


def lake_key(asset: str, city: str, partition: str | None = None) -> str:
    """The key of a partition's file (the layout storage.partition_key_path writes)."""
    parts = [asset, f"city={city}"] + ([f"dt={partition}"] if partition else [])
    return "/".join([*parts, "part.parquet"])


class LakeUnavailable(Exception):
    """The storage cannot be reached (S3 down, wrong endpoint, no credentials)."""


class NotMaterialized(Exception):
    """Nothing of an asset in the lake yet; the message says what to run."""


def what_to_run(city: str, asset: str) -> str:
    return (
        f"Run `bikeshare demo` (the whole pipeline on the embedded period), or materialize it: "
        f"`dagster asset materialize -m bikeshare_assets.definitions --select {city}/{asset} "
        f"--partition <key>`."
    )


@dataclass
class LakeReader:
    """Pruned, cached reads of materialized partitions. Thread-safe (Streamlit sessions
    share one reader)."""

    root: str
    s3_endpoint_url: str | None = None
    cache_ttl_s: float = 30.0  # S3 only: how long a listing or an object is trusted
    _cache: dict[tuple, tuple[Any, Any]] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _storage: Any = field(default=None, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> LakeReader:
        return cls(settings.storage_root, settings.s3_endpoint_url)

    @property
    def is_s3(self) -> bool:
        return self.root.startswith("s3://")

    def uri(self, key: str) -> str:
        return f"{self.root.rstrip('/')}/{key}"

    # ---- storage access --------------------------------------------------------------

    def _lake(self):
        if self._storage is None:
            from bikeshare_assets.storage import LakeStorage

            self._storage = LakeStorage(root=self.root, s3_endpoint_url=self.s3_endpoint_url)
        return self._storage

    def _s3_call(self, what: str, fn, *args):
        try:
            return fn(*args)
        except Exception as exc:  # botocore raises many kinds; all mean "cannot read"
            if type(exc).__name__ in ("NoSuchKey",):
                raise
            endpoint = f" at {self.s3_endpoint_url}" if self.s3_endpoint_url else ""
            raise LakeUnavailable(
                f"Cannot {what} in {self.root}{endpoint}: {type(exc).__name__}: {exc}. Check "
                "BIKESHARE_STORAGE_ROOT, BIKESHARE_S3_ENDPOINT_URL and the AWS credentials "
                "(`bikeshare env` prints them)."
            ) from exc

    def list_keys(self, prefix: str) -> list[str]:
        """Keys under `prefix`, relative to the root, sorted (hidden temp files left out)."""
        if self.is_s3:
            return self._cached(
                ("list", prefix),
                None,
                lambda: self._s3_call("list", self._lake().list_keys, prefix),
            )
        base = Path(self.root) / prefix
        if not base.exists():
            return []
        root = Path(self.root)
        return sorted(
            str(p.relative_to(root))
            for p in base.rglob("*")
            if p.is_file() and not p.name.startswith(".")
        )

    def read_bytes(self, key: str) -> bytes:
        if self.is_s3:
            return self._s3_call(f"read {key}", self._lake().read_bytes, key)
        return (Path(self.root) / key).read_bytes()

    def _cached(self, key: tuple, stamp: Any, load):
        """`load()` unless the cache holds `key` with the same stamp (local: file mtime and
        size; S3: none, trusted for cache_ttl_s)."""
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None:
            seen, value = hit
            if stamp is not None and seen == stamp:
                return value
            if stamp is None and now - seen < self.cache_ttl_s:
                return value
        value = load()
        with self._lock:
            self._cache[key] = (stamp if stamp is not None else now, value)
        return value

    def check_reachable(self) -> None:
        """Raise LakeUnavailable when the storage cannot be listed at all."""
        if self.is_s3:
            self._s3_call("list", self._lake().list_keys, "_bikeshare_probe/")

    # ---- partitions ------------------------------------------------------------------

    def partitions(self, city: str, asset: str) -> list[str]:
        """Partition keys of `asset` in `city` that have a file, oldest first."""
        prefix = f"{asset}/city={city}"
        if not self.is_s3:
            folder = Path(self.root) / prefix
            if not folder.is_dir():
                return []
            return sorted(
                entry.name[3:]
                for entry in os.scandir(folder)
                if entry.name.startswith("dt=") and os.path.exists(f"{entry.path}/part.parquet")
            )
        keys = self.list_keys(prefix + "/")
        return sorted(
            k.split("/dt=", 1)[1].split("/", 1)[0] for k in keys if k.endswith("/part.parquet")
        )

    def read(
        self,
        city: str,
        asset: str,
        partitions: Sequence[str] | None = None,
        columns: Sequence[str] | None = None,
    ) -> pl.DataFrame:
        """Partitions of an asset (all when None) as one frame, only `columns` (when given).
        Missing partitions are skipped; an asset with none raises NotMaterialized."""
        available = self.partitions(city, asset)
        wanted = available if partitions is None else [p for p in partitions if p in available]
        if not available:
            raise NotMaterialized(
                f"{city}/{asset} has not been materialized yet ({self.uri(lake_key(asset, city))} "
                f"has no partitions). {what_to_run(city, asset)}"
            )
        cols = tuple(columns) if columns else None
        keys = [lake_key(asset, city, p) for p in wanted]
        if len(keys) > 4:
            with ThreadPoolExecutor(max_workers=8) as pool:
                frames = list(pool.map(lambda k: self._read_file(k, cols), keys))
        else:
            frames = [self._read_file(k, cols) for k in keys]
        frames = [f for f in frames if f.height]
        if not frames:
            return pl.DataFrame()
        return pl.concat(frames, how="diagonal_relaxed") if len(frames) > 1 else frames[0]

    def _stamp(self, key: str) -> tuple[int, ...] | None:
        """When a local file (or its checksum sidecar) last changed; None on S3."""
        if self.is_s3:
            return None
        st = os.stat(Path(self.root) / key)
        try:
            side = os.stat(Path(self.root) / (key + CHECKSUM_SUFFIX))
            side_stamp = (side.st_mtime_ns, side.st_size)
        except FileNotFoundError:
            side_stamp = (0, 0)
        return (st.st_mtime_ns, st.st_size, *side_stamp)

    def version(self, city: str, asset: str, partition: str) -> tuple[int, ...] | None:
        """What identifies a partition's stored bytes (local: mtime and size of the file and
        its checksum), for callers' caches of what they built from it; None on S3."""
        return self._stamp(lake_key(asset, city, partition))

    def _verified(self, key: str) -> bytes:
        """The file's bytes, checked against its SHA-256 sidecar (integrity.py, the same
        check the pipeline's IO manager makes): CorruptPartitionError names the file, the
        partition and the command that rebuilds it."""
        return verified_bytes(self.read_bytes, self.uri(key), key)

    def _read_file(self, key: str, columns: tuple[str, ...] | None) -> pl.DataFrame:
        return self._cached(
            ("file", key, columns),
            self._stamp(key),
            lambda: parse_parquet(self._verified(key), self.uri(key), key, columns),
        )

    def rows(self, city: str, asset: str, partition: str) -> int:
        """Row count of one partition from the parquet footer (a gap is an empty file)."""
        key = lake_key(asset, city, partition)
        if self.is_s3:
            return self._read_file(key, None).height

        def count() -> int:
            data = self._verified(key)
            try:
                return pl.scan_parquet(io.BytesIO(data)).select(pl.len()).collect().item()
            except Exception:  # unreadable although its checksum matches (or has none)
                return parse_parquet(data, self.uri(key), key).height

        return self._cached(("rows", key), self._stamp(key), count)

    def nonempty_partitions(self, city: str, asset: str, last: int | None = None) -> list[str]:
        """Partition keys that hold rows (recorder gaps left out), oldest first; only among
        the newest `last` partitions when given."""
        keys = self.partitions(city, asset)
        keys = keys[-last:] if last else keys
        return [k for k in keys if self.rows(city, asset, k)]

    def latest(
        self, city: str, asset: str, n: int = 1, columns: Sequence[str] | None = None
    ) -> pl.DataFrame:
        """The newest `n` partitions of an asset."""
        available = self.partitions(city, asset)
        return self.read(city, asset, available[-n:] if available else [], columns)

    def files_in_partition(self, city: str, asset: str, partition: str) -> list[str]:
        """Every file stored beside a partition's parquet (reports, JSON), as full URIs."""
        prefix = f"{asset}/city={city}/dt={partition}/"
        return [self.uri(k) for k in self.list_keys(prefix)]

    def quarantined(self) -> list[dict[str, Any]]:
        """Every rejected batch's reason (see ingest/quarantine.py), newest partition last."""
        reasons = [k for k in self.list_keys("quarantine") if k.endswith("reason.json")]
        return [json.loads(self.read_bytes(k)) for k in reasons]


# --------------------------------------------------------------------------------------
# freshness


def reference_time(city: City, source: SourceMode, now: datetime | None = None) -> datetime:
    """'Now' for freshness: the wall clock for a live feed, the end of the period for a
    replay or a simulation (their present is the end of the recording)."""
    now = now or datetime.now(UTC)
    _, end = city.period_for(source)
    if source is SourceMode.LIVE or end is None:
        return now
    return min(now, end)


def freshness_table(
    reader: LakeReader, city: City, source: SourceMode, now: datetime | None = None
) -> pl.DataFrame:
    """Per asset: newest partition, its age at the reference time, the allowance, status."""
    cadence = timedelta(minutes=city.cadence_for(source))
    ref = reference_time(city, source, now)
    rows = []
    for asset in ASSET_PARTITIONS:
        keys = reader.partitions(city.key, asset)
        allowed = freshness_allowance(asset, cadence)
        if not keys:
            rows.append(
                {
                    "asset": asset,
                    "partitions": 0,
                    "newest": None,
                    "age_min": None,
                    "allowed_min": allowed.total_seconds() / 60,
                    "status": "missing",
                }
            )
            continue
        _, end = partition_window(asset, keys[-1], cadence)
        age = max(timedelta(0), ref - end)
        rows.append(
            {
                "asset": asset,
                "partitions": len(keys),
                "newest": keys[-1],
                "age_min": age.total_seconds() / 60,
                "allowed_min": allowed.total_seconds() / 60,
                "status": "fresh" if age <= allowed else "stale",
            }
        )
    return pl.DataFrame(
        rows,
        schema={
            "asset": pl.String,
            "partitions": pl.Int64,
            "newest": pl.String,
            "age_min": pl.Float64,
            "allowed_min": pl.Float64,
            "status": pl.String,
        },
    )


# --------------------------------------------------------------------------------------
# MLflow registry (read only)

REGISTRY_TAGS = (
    "day",
    "promoted_at",
    "previous_champion",
    "superseded_by",
    "rolled_back_at",
    "restored_from",
)


class RegistryUnavailable(Exception):
    """No MLflow store yet, or it cannot be reached."""


def _sqlite_missing(uri: str) -> Path | None:
    if uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///") :])
        return None if path.exists() else path
    return None


def registry_client(settings: Settings):
    """An MlflowClient on the settings' store; never creates an empty SQLite store."""
    missing = _sqlite_missing(settings.mlflow_tracking_uri)
    if missing is not None:
        raise RegistryUnavailable(
            f"No MLflow store at {missing} yet: nothing has been trained. Run `bikeshare demo` "
            "(or materialize <city>/stockout_model and <city>/registered_model_version)."
        )
    from mlflow.tracking import MlflowClient

    return MlflowClient(settings.mlflow_tracking_uri, settings.mlflow_tracking_uri)


def model_versions(settings: Settings, city: str, targets: Sequence[str]) -> pl.DataFrame:
    """Every registered version of each target's model: aliases, history tags, run."""
    from mlflow.exceptions import MlflowException

    client = registry_client(settings)
    rows = []
    for target in targets:
        name = f"{city}_{target}"
        try:
            versions = client.search_model_versions(f"name='{name}'")
            # search results carry no aliases in MLflow 3; the registered model does
            aliases = client.get_registered_model(name).aliases if versions else {}
        except MlflowException as exc:
            raise RegistryUnavailable(
                f"Cannot read the MLflow registry at {settings.mlflow_tracking_uri}: {exc}"
            ) from exc
        for v in versions:
            rows.append(
                {
                    "target": target,
                    "registered_model": name,
                    "version": int(v.version),
                    "aliases": ", ".join(
                        sorted(a for a, n in aliases.items() if str(n) == str(v.version))
                    ),
                    "registered_at": datetime.fromtimestamp(v.creation_timestamp / 1000, UTC),
                    "run_id": v.run_id or "",
                    **{t: v.tags.get(t) for t in REGISTRY_TAGS},
                    "dagster_run_id": v.tags.get("dagster.run_id"),
                }
            )
    schema = {
        "target": pl.String,
        "registered_model": pl.String,
        "version": pl.Int64,
        "aliases": pl.String,
        "registered_at": pl.Datetime("us", "UTC"),
        "run_id": pl.String,
        **dict.fromkeys(REGISTRY_TAGS, pl.String),
        "dagster_run_id": pl.String,
    }
    return pl.DataFrame(rows, schema=schema).sort("target", "version", descending=[False, True])


def serving_thresholds(settings: Settings, city: str) -> dict[str, dict[str, float]]:
    """Serving bundle label (e.g. `stockout_bikes:v1+stockout_docks:v1`) -> the decision
    thresholds it flags with, from the bundle versions' tags."""
    client = registry_client(settings)
    out: dict[str, dict[str, float]] = {}
    try:
        versions = client.search_model_versions(f"name='{city}_stockout_serving'")
    except Exception:
        return out
    for v in versions:
        if v.tags.get("champions"):
            out[v.tags["champions"]] = {
                k: float(x) for k, x in json.loads(v.tags.get("thresholds", "{}")).items()
            }
    return out


def run_reason(settings: Settings, dagster_run_id: str | None) -> str:
    """Why a model was trained: the reason tag of the Dagster run that trained it (sensors
    write one), else who launched it (the demo tags its runs), else the schedule or sensor."""
    if not dagster_run_id:
        return "unknown (no Dagster run recorded on the version)"
    if (
        not (settings.dagster_home / "dagster.yaml").exists()
        and not (settings.dagster_home / "history").exists()
    ):
        return f"Dagster run {dagster_run_id[:8]} (no instance at {settings.dagster_home})"
    import dagster as dg

    with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        run = instance.get_run_by_id(dagster_run_id)
    if run is None:
        return f"Dagster run {dagster_run_id[:8]} (not in the instance at {settings.dagster_home})"
    tags = run.tags
    for key in sorted(tags):
        if key.endswith("reason"):
            return f"{tags[key]} (run {dagster_run_id[:8]})"
    for key, label in (
        ("bikeshare/launched_by", "launched by"),
        ("dagster/sensor_name", "sensor"),
        ("dagster/schedule_name", "schedule"),
    ):
        if key in tags:
            return f"{label} {tags[key]} (run {dagster_run_id[:8]})"
    return f"manual run {dagster_run_id[:8]}"
