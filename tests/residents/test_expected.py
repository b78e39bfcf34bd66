"""Honest expected dates: the fallback chain, emergencies on their own, and on the real
LA data how often the real close came inside the range we would have promised."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine
from sqlmodel import Session

from server.intake.importer import import_file
from server.residents.expected import MIN_SAMPLE, CloseTimes, evaluate_promises
from server.settings import IntakeSettings
from tests.conftest import DATA, load_city_areas

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)
DUE = NOW + timedelta(hours=72)


def figures(rows: list[tuple[str, int | None, bool, float]]) -> CloseTimes:
    return CloseTimes.from_durations(rows, as_of=NOW)


def test_the_same_district_first_then_the_city_then_the_sla() -> None:
    rows = [("pothole", 7, False, float(h)) for h in range(1, MIN_SAMPLE + 1)]  # 1 … 20 hours
    rows += [("pothole", 8, False, 100.0)] * 5
    times = figures(rows)
    district = times.expect(service_code="pothole", district_id=7, emergency=False, reported_at=NOW, sla_due_at=DUE)
    assert district.basis == "district" and district.sample_size == MIN_SAMPLE
    assert district.median_hours == pytest.approx(10.5) and district.p80_hours == pytest.approx(16.2)
    assert district.low_at == NOW + timedelta(hours=10.5) and district.high_at == NOW + timedelta(hours=16.2)
    # District 8 has five closes: the city's 25 speak for it.
    city = times.expect(service_code="pothole", district_id=8, emergency=False, reported_at=NOW, sla_due_at=DUE)
    assert city.basis == "citywide" and city.sample_size == MIN_SAMPLE + 5
    sla = times.expect(service_code="graffiti", district_id=7, emergency=False, reported_at=NOW, sla_due_at=DUE)
    assert (sla.basis, sla.low_at, sla.high_at, sla.p80_hours) == ("sla", None, DUE, 72.0)


def test_an_emergency_is_never_promised_the_routine_figure() -> None:
    routine = [("gas", 3, False, 200.0)] * 40
    times = figures(routine)
    due = NOW + timedelta(hours=4)
    urgent = times.expect(service_code="gas", district_id=3, emergency=True, reported_at=NOW, sla_due_at=due)
    assert urgent.basis == "sla" and urgent.high_at == due and urgent.emergency
    with_history = figures(routine + [("gas", 3, True, 2.0)] * MIN_SAMPLE)
    urgent = with_history.expect(service_code="gas", district_id=3, emergency=True, reported_at=NOW, sla_due_at=due)
    assert urgent.basis == "district" and urgent.p80_hours == pytest.approx(2.0)


def test_only_the_most_recent_closes_count() -> None:
    old = [("pothole", 1, False, 500.0)] * 1000
    recent = [("pothole", 1, False, 5.0)] * 400  # most recent first, as the query orders them
    times = figures(recent + old)
    expected = times.expect(service_code="pothole", district_id=1, emergency=False, reported_at=NOW, sla_due_at=DUE)
    assert expected.p80_hours == pytest.approx(5.0) and expected.sample_size == 400


@pytest.mark.slow
def test_promises_on_held_back_weeks_of_real_la_data(engine: Engine) -> None:
    """Everything before 2020 is what the city knew; the 2020 export is held back."""
    load_city_areas(engine, "la")
    for path in sorted((DATA / "la/records").glob("*.csv.gz")):
        import_file(engine, path, settings=IntakeSettings(timezone="America/Los_Angeles"))
    cutoff = datetime(2019, 12, 1, tzinfo=UTC)
    with Session(engine) as session:
        check = evaluate_promises(session, cutoff=cutoff)
    print(f"\nLA, reported after {cutoff:%Y-%m-%d}: of {check.closed:,} closed, {check.share_by_p80:.1%} closed by "
          f"the promised upper end (80th percentile), {check.share_by_median:.1%} by the median; "
          f"{check.open_late} still open past it ({check.strict_share_by_p80:.1%} counting those as misses), "
          f"{check.open_not_due} open and not yet due; by basis {check.by_basis}")
    assert check.closed > 5000
    assert check.share_by_median < check.share_by_p80
    assert check.share_by_p80 >= 0.75 and check.strict_share_by_p80 >= 0.75
