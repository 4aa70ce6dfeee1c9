"""The published NLL-per-minute numbers agree with the measurements they come from.

Every row of ``benchmarks/results/nll_per_minute.jsonl`` (one `vaelab train --time-budget`
run scored with K = 5000, written by benchmarks/nll_per_minute.py) is typed by hand into
docs/results.md's table and into the presets' "reached here" lines; these tests catch a
number typed wrong, a row left out, or a row with no measurement behind it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from vaelab.presets import PRESETS

ROOT = Path(__file__).resolve().parents[1]
MEASURED = [
    json.loads(line)
    for line in (ROOT / "benchmarks" / "results" / "nll_per_minute.jsonl").read_text().splitlines()
    if line.strip()
]
TABLE_HEADER = "| recipe | cores | budget | what it did | test NLL, K = 5000 (nats) | command |"


def cores_used(row: dict) -> int:
    """The cores the run trained on, as recorded (1 for --threads 1)."""
    return 1 if str(row.get("threads")) == "1" else int(row["cores"])


def recipe_label(row: dict) -> str:
    """How docs/results.md names the row's recipe in its first cell."""
    recipe = row.get("recipe") or row["preset"]
    return "the lecture's model" if recipe == "lecture" else f"`{recipe}`"


def table_rows() -> list[list[str]]:
    """The cells of each row of docs/results.md's NLL-per-minute table."""
    lines = (ROOT / "docs" / "results.md").read_text().splitlines()
    start = lines.index(TABLE_HEADER) + 2  # past the header and its |---| line
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def matches(cells: list[str], row: dict) -> bool:
    label, cores, budget, _, nll = cells[:5]
    return (
        recipe_label(row) in label
        and cores == str(cores_used(row))
        and budget == f"{row['minutes']:g} min"
        and f"{row['nll']:.2f} ± {row['nll_se']:.2f}" in nll
    )


@pytest.mark.parametrize(
    "row",
    MEASURED,
    ids=[
        f"{r.get('recipe') or r['preset']}-{cores_used(r)}core-{r['minutes']:g}min"
        for r in MEASURED
    ],
)
def test_each_measured_row_is_in_the_results_table(row):
    assert any(matches(cells, row) for cells in table_rows()), (
        f"docs/results.md has no row for {recipe_label(row)} on {cores_used(row)} core(s), "
        f"{row['minutes']:g} min: {row['nll']:.2f} ± {row['nll_se']:.2f}"
    )


def test_each_timed_row_of_the_table_was_measured():
    timed = [c for c in table_rows() if re.fullmatch(r"\d+ min", c[2]) and "±" in c[4]]
    earlier = [c for c in timed if "earlier row" in c[0]]  # the hour of docs/results.md's top
    assert len(timed) >= len(MEASURED) and len(earlier) == 1
    for cells in timed:
        if cells not in earlier:
            assert any(matches(cells, row) for row in MEASURED), f"no measurement: {cells[:5]}"


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_a_presets_reached_line_quotes_measured_numbers(name):
    reached = PRESETS[name].reached
    quoted = re.findall(r"\b\d{2,3}\.\d\d\b", reached)
    measured = {f"{r['nll']:.2f}" for r in MEASURED if r["preset"] == name}
    assert quoted, f"{name}: no NLL in its reached line"
    assert set(quoted) <= measured, f"{name}: {set(quoted) - measured} not in the jsonl"
