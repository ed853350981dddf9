"""Doc tables generated from the code, so the docs cannot quote a stale value.

    .venv/bin/python -m bikeshare_assets_tests.docs_sync          # rewrite the sections (= make docs)
    .venv/bin/python -m bikeshare_assets_tests.docs_sync --check  # exit 1 if one is stale

Each generated section sits between `<!-- generated:NAME:start -->` and
`<!-- generated:NAME:end -->` markers; everything outside them is left as it is.
`test_docs.py` fails when a section differs from what this module generates.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def env_table() -> str:
    """Every environment variable the project reads, from settings.ENVIRONMENT_VARIABLES."""
    from bikeshare_assets.settings import ENVIRONMENT_VARIABLES

    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for name, default, meaning in ENVIRONMENT_VARIABLES:
        # A literal value is code; a description ("the lake's bucket") is prose.
        literal = " " not in default and not default.startswith("(")
        shown = (f"`{default}`" if literal else default) if default else "—"
        cell = meaning.replace("|", "\\|")  # a pipe inside a table cell
        lines.append(f"| `{name}` | {shown} | {cell} |")
    return "\n".join(lines)


def null_budget_table() -> str:
    """The `null_budget` check's budgets, from features.assets.NULL_BUDGETS."""
    from bikeshare_assets.features.assets import NULL_BUDGETS

    by_budget: dict[float, list[str]] = {}
    for feature, budget in NULL_BUDGETS.items():
        by_budget.setdefault(budget, []).append(feature)
    lines = ["| budget (max share of null rows) | features |", "|---|---|"]
    for budget in sorted(by_budget):
        names = ", ".join(f"`{f}`" for f in by_budget[budget])
        lines.append(f"| {budget:g} | {names} |")
    return "\n".join(lines)


def automation_table() -> str:
    """Each asset's automation condition (its UI label) and freshness policy, from
    automation/policies.py, for a 5-minute city (the live default)."""
    from datetime import timedelta

    from bikeshare_assets.automation.policies import policy_rows

    lines = [
        "| asset | runs by itself when (condition label) | freshness (live, 5-minute cadence) |",
        "|---|---|---|",
    ]
    for name, condition, freshness in policy_rows(timedelta(minutes=5)):
        lines.append(f"| `{name}` | {condition} | {freshness} |".replace("\n", " "))
    return "\n".join(lines)


# section name -> (generator, files that carry the section)
SECTIONS: dict[str, tuple[Callable[[], str], tuple[str, ...]]] = {
    "env-table": (env_table, ("README.md", "docs/cicd.md")),
    "null-budgets": (null_budget_table, ("docs/feature_store.md",)),
    "automation-policies": (automation_table, ("docs/automation.md",)),
}


def markers(name: str) -> tuple[str, str]:
    return f"<!-- generated:{name}:start -->", f"<!-- generated:{name}:end -->"


def section_pattern(name: str) -> re.Pattern[str]:
    start, end = markers(name)
    return re.compile(re.escape(start) + r"\n(.*?)\n?" + re.escape(end), re.DOTALL)


def current_section(text: str, name: str) -> str | None:
    found = section_pattern(name).search(text)
    return found.group(1).strip() if found else None


def rewrite(text: str, name: str, body: str) -> str:
    start, end = markers(name)
    block = f"{start}\n{body.strip()}\n{end}"
    pattern = section_pattern(name)
    if not pattern.search(text):
        raise ValueError(f"no {start} … {end} section to rewrite")
    return pattern.sub(lambda _: block, text, count=1)


def stale_sections(root: Path = REPO) -> list[str]:
    """'file: section' for every generated section that is missing or out of date."""
    stale = []
    for name, (generate, files) in SECTIONS.items():
        body = generate().strip()
        for rel in files:
            if current_section((root / rel).read_text(encoding="utf-8"), name) != body:
                stale.append(f"{rel}: {name}")
    return stale


def write_all(root: Path = REPO) -> list[str]:
    changed = []
    for name, (generate, files) in SECTIONS.items():
        body = generate()
        for rel in files:
            path = root / rel
            text = path.read_text(encoding="utf-8")
            new = rewrite(text, name, body)
            if new != text:
                path.write_text(new, encoding="utf-8")
                changed.append(f"{rel}: {name}")
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bikeshare_assets_tests.docs_sync")
    parser.add_argument("--check", action="store_true", help="only report stale sections")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_sections()
        for item in stale:
            print(f"stale: {item} (run `make docs`)", file=sys.stderr)
        return 1 if stale else 0
    for item in write_all():
        print(f"rewrote {item}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
