"""What every page of the dashboard shares: settings, the lake reader, the chosen city,
cached loads, and the guard that turns a failure into a message instead of a traceback.

Nothing here knows a path: every read goes through bikeshare_assets.read.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import polars as pl
import streamlit as st

from bikeshare_assets.cities import City
from bikeshare_assets.read import (
    CorruptPartitionError,
    LakeReader,
    LakeUnavailable,
    NotMaterialized,
    RegistryUnavailable,
    what_to_run,
)
from bikeshare_assets.settings import Settings, get_settings

CACHE_TTL_S = 30


@st.cache_resource(show_spinner=False)
def settings() -> Settings:
    return get_settings()


@st.cache_resource(show_spinner=False)
def reader(root: str, endpoint: str | None) -> LakeReader:
    """One reader per storage for every session: its file cache is shared."""
    return LakeReader(root, endpoint)


def lake() -> LakeReader:
    s = settings()
    return reader(s.storage_root, s.s3_endpoint_url)


def city() -> City:
    """The city chosen in the sidebar (the first configured one by default)."""
    s = settings()
    key = st.session_state.get("city") or next(iter(s.cities))
    return s.cities[key]


def require_partitions(city_key: str, asset: str, what: str) -> list[str]:
    """The asset's partition keys, or an explanation of what to run and a stop."""
    keys = lake().partitions(city_key, asset)
    if keys:
        return keys
    anything = any(lake().partitions(city_key, a) for a in ("raw_station_status", asset))
    if not anything:
        st.info(
            f"**Nothing is materialized for {city_key} yet** in `{lake().root}`.\n\n"
            "Run the pipeline once: `make demo` (or `bikeshare demo`), then reload this page."
        )
    else:
        st.info(f"**No {what} for {city_key} yet.** {what_to_run(city_key, asset)}")
    st.stop()
    return []


def scored_snapshots(city_key: str, last: int = 200) -> list[str]:
    """Snapshot keys of the newest `last` prediction partitions that hold rows."""
    require_partitions(city_key, "stockout_predictions", "scored snapshots")
    keys = lake().nonempty_partitions(city_key, "stockout_predictions", last)
    if not keys:
        st.info(
            f"The {last} newest stockout_predictions partitions of {city_key} are all empty "
            "(recorder gaps: no snapshot was scored). Materialize newer snapshots."
        )
        st.stop()
    return keys


def stations_for(city_key: str, partition: str) -> pl.DataFrame | None:
    """The station list of the snapshot's day, else the newest one there is."""
    days = lake().partitions(city_key, "raw_station_information")
    if not days:
        return None
    day = partition[:10] if partition[:10] in days else days[-1]
    return lake().read(
        city_key, "raw_station_information", [day], ["station_id", "name", "lat", "lon", "capacity"]
    )


def local_time(city_: City, partition: str) -> str:
    """`2025-09-16-11:15` (UTC) as '2025-09-16 13:15 Europe/Paris (11:15 UTC)'."""
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    at = datetime.strptime(partition, "%Y-%m-%d-%H:%M").replace(tzinfo=UTC)
    here = at.astimezone(ZoneInfo(city_.timezone))
    return f"{here:%a %d %b %H:%M} {city_.timezone} ({at:%H:%M} UTC)"


def corrupt_message(exc: CorruptPartitionError) -> str:
    """A failed checksum as a dispatcher reads it: which file, which asset and partition,
    and the one command that writes it again."""
    where = exc.location
    partition = f", partition **{where.partition}**" if where.partition else ""
    return (
        f"**A data file failed its integrity check:** asset **{where.asset}**{partition}.\n\n"
        f"File `{exc.uri}`: {exc.reason}.\n\n"
        f"Rebuild it with `{where.rebuild_command}` (it overwrites the file), then press "
        "*Reload data* in the sidebar. This page shows nothing from it until then."
    )


@contextmanager
def guard() -> Iterator[None]:
    """A page body: known failures become a message with what to do; anything else a short
    error naming the exception — never a traceback on a dispatcher's screen."""
    from streamlit.runtime.scriptrunner_utils.exceptions import ScriptControlException

    try:
        yield
    except ScriptControlException:
        raise  # st.stop() / st.rerun()
    except LakeUnavailable as exc:
        st.error(f"**The data lake cannot be reached.** {exc}")
    except CorruptPartitionError as exc:
        st.error(corrupt_message(exc))
    except NotMaterialized as exc:
        st.info(str(exc))
    except RegistryUnavailable as exc:
        st.warning(str(exc))
    except Exception as exc:
        st.error(
            f"**This page could not be drawn:** {type(exc).__name__}: {exc}\n\n"
            "The data may be from an older version of the pipeline; re-run `bikeshare demo` or "
            "materialize the assets this page reads, then reload."
        )


def sidebar() -> None:
    """City picker (when there is a choice) and where the data comes from (drawn on every
    page)."""
    s = settings()
    if not s.cities:
        st.sidebar.error(f"No city supports BIKESHARE_SOURCE={s.source}; see cities.toml.")
        st.stop()
    if len(s.cities) > 1:
        st.sidebar.selectbox(
            "City", list(s.cities), format_func=lambda k: s.cities[k].display_name, key="city"
        )
    else:  # nothing to pick: a line of text draws faster than a widget on every page
        st.sidebar.markdown(f"**City:** {city().display_name}")
    st.sidebar.caption(f"Data: `{s.storage_root}` · source `{s.source}` · `{s.deployment}`")
    if st.sidebar.button("Reload data"):
        st.cache_data.clear()
