"""server.intake.formats against the real 311 exports in shared/data/311 (see its README).

Corrupt inputs are made in tmp_path from the real files; nothing synthetic is parsed except
where a single value is broken on purpose.
"""

from __future__ import annotations

import collections
import contextlib
import csv
import gzip
import io
import json
import math
import os
import shutil
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from server.intake.formats import FORMATS, detect_format, read_batches
from server.intake.formats.common import FieldError, TimeParser, coordinate_pair, projected_pair, slug
from server.intake.formats.nyc import community_district
from server.intake.formats.projection import state_plane_to_wgs84
from server.intake.formats.streams import json_array_items
from server.intake.records import BAD_CLOSE_TIME, FormatError, IncomingCase, RejectedRow


def _data_dir() -> Path:
    default = Path(__file__).resolve().parents[3] / "shared" / "data" / "311"
    if (default / "manifest.json").is_file():
        return default
    return Path(os.environ.get("FIELDWORK_DATA_DIR", default))


DATA = _data_dir()
MANIFEST = json.loads((DATA / "manifest.json").read_text()) if (DATA / "manifest.json").is_file() else None

pytestmark = pytest.mark.skipif(MANIFEST is None, reason=f"311 test data not found at {DATA} (set FIELDWORK_DATA_DIR)")

ZONES = {
    "la": ZoneInfo("America/Los_Angeles"),
    "chicago": ZoneInfo("America/Chicago"),
    "nyc": ZoneInfo("America/New_York"),
    "open311": ZoneInfo("America/New_York"),  # the fixture is Boston
}
UTC = UTC

# (relative file, expected format, manifest row count)
FILES: list[tuple[str, str, int]] = []
if MANIFEST is not None:
    FILES = [(e["file"], e["city"], e["rows"]) for e in MANIFEST["records"]]
    FILES += [(e["file"], "open311", e["rows"]) for e in MANIFEST["format_fixtures"]]

LA_2017 = "la/records/la_myla311_2017-12-27_2017-12-31.csv.gz"
LA_2020 = "la/records/la_myla311_2020-01-01_2020-01-03.csv.gz"
CHI_ALLEY = "chicago/records/chi_alley_lights_out_2012-04_2013-07.csv.gz"
CHI_GRAFFITI = "chicago/records/chi_graffiti_removal_historical_2011-2018.csv.gz"
NYC_2013 = "nyc/records/nyc_311_2013-12-25__nikeiubel.csv.gz"
NYC_API = "nyc/records/nyc_311_2023-12-07_08__kexinjiao_api.csv.gz"
NYC_JSON = "nyc/records/nyc_311_2024-05-26_27__anthonyupf_api.json.gz"
BOSTON = "open311/boston_open311_georeport_v2_requests.json"

# Rejects that are the data's fault and documented in the data README, allowed above 1 %.
DOCUMENTED_REJECTS = ("closed date before created date",)


def parse(relative: str | Path, fmt: str = "auto", tz: ZoneInfo | None = None, batch_size: int = 2000) -> list[IncomingCase | RejectedRow]:
    path = DATA / relative if not Path(relative).is_absolute() else Path(relative)
    zone = tz or ZONES[detect_format(path)]
    return [item for batch in read_batches(path, fmt=fmt, tz=zone, batch_size=batch_size) for item in batch]


def cases(items: list[IncomingCase | RejectedRow]) -> list[IncomingCase]:
    return [item for item in items if isinstance(item, IncomingCase)]


def rejects(items: list[IncomingCase | RejectedRow]) -> list[RejectedRow]:
    return [item for item in items if isinstance(item, RejectedRow)]


def by_id(items: list[IncomingCase | RejectedRow], external_id: str) -> IncomingCase:
    return next(case for case in cases(items) if case.external_id == external_id)


def csv_rows(relative: str) -> tuple[list[str], list[list[str]]]:
    with gzip.open(DATA / relative, "rt", encoding="utf-8", newline="") as stream:
        header, *rows = list(csv.reader(stream))
    return header, rows


def write_csv(path: Path, header: list[str], rows: list[list[str]], *, gz: bool = False) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    data = buffer.getvalue().encode("utf-8")
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


# --- every real file ---------------------------------------------------------------------------


@pytest.mark.parametrize(("relative", "expected_format", "rows"), FILES, ids=[Path(f).name for f, _, _ in FILES])
def test_every_real_file_parses_completely(relative: str, expected_format: str, rows: int) -> None:
    path = DATA / relative
    assert detect_format(path) == expected_format
    items = parse(relative)
    assert len(items) == rows, "every record becomes exactly one IncomingCase or RejectedRow"
    assert [item.line for item in items] == list(range(1, rows + 1)), "file order, 1-based record numbers"

    bad = rejects(items)
    reasons = collections.Counter(r.reason.split(" (")[0].split(":")[0] for r in bad)
    print(f"\n{path.name}: {len(items) - len(bad)} cases, {len(bad)} rejected {dict(reasons)}")
    for reject in bad[:3]:
        print(f"    line {reject.line}: {reject.reason}")
    undocumented = [r for r in bad if not r.reason.startswith(DOCUMENTED_REJECTS)]
    assert len(undocumented) < 0.01 * rows, undocumented[:5]

    expected_source = "open311" if expected_format == "open311" else expected_format
    for case in cases(items):
        assert case.source == expected_source
        assert case.external_id and case.service_name and case.service_code
        assert case.requested_at.tzinfo is UTC
        assert case.closed_at is None or (case.closed_at.tzinfo is UTC and case.closed_at >= case.requested_at)
        assert (case.lat is None) == (case.lon is None)
        if case.lat is not None:
            assert -90 <= case.lat <= 90 and -180 <= case.lon <= 180  # type: ignore[operator]
        assert case.status_received


def test_closed_before_created_rows_are_kept_and_flagged() -> None:
    # README: NYC jun-yan sample3's first two rows look hand-edited (closed 2023-01-01, created 2023-02-28).
    items = parse("nyc/records/nyc_311_2023-02-28__jun-yan_test_sample3.csv.gz")
    first = items[0]
    assert isinstance(first, IncomingCase) and first.external_id == "56923577"
    assert first.closed_at == first.requested_at  # closed, at the earliest time it can have been
    assert first.attributes[BAD_CLOSE_TIME] == [
        "Closed Date '01/01/2023 01:00:00 AM' is before Created Date '02/28/2023 11:45:00 PM'"
    ]


def test_close_recorded_as_a_bare_date_on_the_same_day_is_kept() -> None:
    """LA closes some requests with a date only (local midnight) on the day they came in."""
    items = parse("la/records/la_myla311_2017-12-27_2017-12-31.csv.gz")
    case = next(i for i in items if isinstance(i, IncomingCase) and i.external_id == "1-870332239")
    assert case.closed_at == case.requested_at  # 'ClosedDate' 12/30/2017 12:00:00 AM, created 05:16:06 PM
    assert BAD_CLOSE_TIME not in case.attributes
    flagged = [
        i for f in ("2017-12-27_2017-12-31", "2018-01-01_2018-01-04", "2018-12-27_2018-12-31")
        for i in parse(f"la/records/la_myla311_{f}.csv.gz") if isinstance(i, IncomingCase) and i.attributes
    ]
    # What is left is a close dated before the request's day (e.g. a year typed wrong): kept, flagged.
    assert 0 < len(flagged) <= 5 and all(BAD_CLOSE_TIME in i.attributes for i in flagged)


def test_detect_format_ignores_the_file_name(tmp_path: Path) -> None:
    plain = tmp_path / "looks_compressed.csv.gz"
    plain.write_bytes(gzip.decompress((DATA / CHI_ALLEY).read_bytes()))
    compressed = tmp_path / "looks_plain.csv"
    shutil.copyfile(DATA / NYC_JSON, compressed)
    assert detect_format(plain) == "chicago"
    assert detect_format(compressed) == "nyc"
    assert len(parse(plain)) == 8076
    assert len(parse(compressed)) == 847


def test_batches_are_bounded_and_in_order() -> None:
    path = DATA / CHI_ALLEY
    batches = list(read_batches(path, tz=ZONES["chicago"], batch_size=777))
    assert all(1 <= len(batch) <= 777 for batch in batches)
    assert [len(batch) for batch in batches[:-1]] == [777] * (len(batches) - 1)
    small = [item.line for batch in batches for item in batch]
    assert small == [item.line for item in parse(CHI_ALLEY)]
    with pytest.raises(ValueError):
        read_batches(path, tz=ZONES["chicago"], batch_size=0)


def test_explicit_format_must_match() -> None:
    # Checked when read_batches is called, before any batch is asked for.
    with pytest.raises(FormatError, match="not a recognised nyc export: header has columns 'SRNumber'"):
        read_batches(DATA / LA_2017, fmt="nyc", tz=ZONES["la"])
    with pytest.raises(FormatError, match="not a recognised open311 export: first JSON record has keys 'unique_key'"):
        read_batches(DATA / NYC_JSON, fmt="open311", tz=ZONES["nyc"])
    with pytest.raises(ValueError, match="unknown format"):
        read_batches(DATA / LA_2017, fmt="boston", tz=ZONES["la"])
    assert len(parse(LA_2017, fmt="la", tz=ZONES["la"])) == 8071
    assert set(FORMATS) == {"la", "chicago", "nyc", "open311"}


# --- coordinates ---------------------------------------------------------------------------------


@pytest.mark.parametrize("relative", [f for f, city, _ in FILES if "lights" in f])
def test_chicago_state_plane_lands_in_chicago(relative: str) -> None:
    located = [case for case in cases(parse(relative)) if case.lat is not None]
    assert len(located) > 8000
    for case in located:
        assert 41.6 <= case.lat <= 42.1 and -87.95 <= case.lon <= -87.5, case  # type: ignore[operator]


def test_chicago_alley_light_by_hand() -> None:
    # 12-00700160, 5931 N ROCKWELL ST: x 1157924.797, y 1939298.014 ft. Rockwell St (2600 W)
    # at 5900 N is about 41.989 N, 87.694 W.
    case = parse(CHI_ALLEY)[0]
    assert isinstance(case, IncomingCase) and case.external_id == "12-00700160"
    assert case.lat == pytest.approx(41.98919, abs=1e-4)
    assert case.lon == pytest.approx(-87.69449, abs=1e-4)
    assert case.address == "5931 N ROCKWELL ST"
    assert case.reported_district == "2"
    assert case.agency == "CDOT"
    assert case.status_received == "Completed" and case.resolution == "Remade Com Ed Connection"
    assert case.closed_at == datetime(2012, 4, 19, 5, 0, tzinfo=UTC)


def test_graffiti_state_plane_agrees_with_the_citys_own_lat_lon() -> None:
    # The graffiti export has both: our EPSG:3435 transform of X/Y must match the city's
    # Latitude/Longitude to street precision (a wrong CRS or feet/metres mix-up is km off).
    header, rows = csv_rows(CHI_GRAFFITI)
    i = {name: header.index(name) for name in ("X Coordinate", "Y Coordinate", "Latitude", "Longitude")}
    both = [row for row in rows if row[i["Latitude"]] and row[i["X Coordinate"]]]
    lats, lons = state_plane_to_wgs84([float(r[i["X Coordinate"]]) for r in both], [float(r[i["Y Coordinate"]]) for r in both])
    metres = sorted(
        math.hypot((lat - float(r[i["Latitude"]])) * 111_000, (lon - float(r[i["Longitude"]])) * 83_000)
        for lat, lon, r in zip(lats, lons, both, strict=False)
    )
    assert metres[len(metres) // 2] < 50
    assert metres[-1] < 300


def test_graffiti_rows_without_lat_lon_fall_back_to_state_plane() -> None:
    items = parse(CHI_GRAFFITI)
    # 327 N WACKER DR ER (an exit ramp of East Wacker, by the river east of Michigan Ave):
    # blank Latitude/Longitude, X/Y given.
    case = by_id(items, "17-05284608")
    assert 41.88 < case.lat < 41.89 and -87.63 < case.lon < -87.60  # type: ignore[operator]
    assert all(c.lat is not None for c in cases(items))
    assert case.description == "Metal - Painted; Pole"  # surface; where on it
    assert case.address == "327 N WACKER DR ER" and case.reported_district == "32"
    dup = next(c for c in cases(items) if c.status_received == "Completed - Dup")
    assert dup.closed_at is not None and dup.resolution == "Completed - Dup" and dup.agency == "DSS"
    still_open = [c for c in cases(items) if c.status_received == "Open - Dup"]
    assert still_open and all(c.closed_at is None for c in still_open)


def test_blank_coordinates_are_unlocated_not_rejected() -> None:
    items = parse(LA_2017)
    unlocated = [c for c in cases(items) if c.lat is None]
    assert len(unlocated) == 1443  # README: graffiti rows with a verified address but no lat/lon
    assert all(c.address for c in unlocated)


# --- times ---------------------------------------------------------------------------------------


def test_la_local_time_to_utc_by_hand() -> None:
    # 1-870704831 was created 12/31/2017 11:59:58 PM in Los Angeles: PST = UTC-8, so
    # 2018-01-01 07:59:58 UTC; closed 04/09/2018 09:18:35 AM PDT (UTC-7) = 16:18:35 UTC.
    case = by_id(parse(LA_2017), "1-870704831")
    assert case.requested_at == datetime(2018, 1, 1, 7, 59, 58, tzinfo=UTC)
    assert case.closed_at == datetime(2018, 4, 9, 16, 18, 35, tzinfo=UTC)
    assert case.status_received == "Closed" and case.resolution == "SR Created"
    assert (case.lat, case.lon) == (34.073216645, -118.266861909)
    assert case.reported_district == "13" and case.agency == "BOS"
    assert case.address == "2111 W BELLEVUE AVE, 90026" and case.description == ""
    assert case.service_code == "homeless-encampment"


def test_la_2020_lower_case_generation() -> None:
    case = by_id(parse(LA_2020), "1-1523590121")  # 2020-01-01 00:05:00 PST
    assert case.requested_at == datetime(2020, 1, 1, 8, 5, tzinfo=UTC)
    assert case.closed_at == datetime(2020, 1, 2, 16, 43, tzinfo=UTC)
    assert case.reported_district == "6"


def test_chicago_date_is_local_midnight() -> None:
    case = parse(CHI_ALLEY)[0]
    assert isinstance(case, IncomingCase)
    assert case.requested_at == datetime(2012, 4, 1, 5, 0, tzinfo=UTC)  # 1-Apr-12 00:00 CDT


def test_nyc_api_date() -> None:
    case = by_id(parse(NYC_API), "59674686")  # 2023-12-08T12:00:00.000 EST
    assert case.requested_at == datetime(2023, 12, 8, 17, 0, tzinfo=UTC)
    assert case.closed_at is None and case.status_received == "Open"
    assert case.reported_district == "112"
    assert (case.lat, case.lon) == (40.85198589447398, -73.92842546176509)


def test_nyc_portal_2013_fields() -> None:
    case = by_id(parse(NYC_2013), "26984072")  # 12/25/2013 11:59:08 PM EST
    assert case.requested_at == datetime(2013, 12, 26, 4, 59, 8, tzinfo=UTC)
    assert case.closed_at == datetime(2013, 12, 26, 6, 15, tzinfo=UTC)
    assert case.service_name == "Blocked Driveway" and case.service_code == "blocked-driveway"
    assert case.description == "No Access; Street/Sidewalk"
    assert case.agency == "NYPD" and case.reported_district == "318"
    assert case.resolution is None  # the 2013 generation has no Resolution Description


def test_nyc_json_reads_like_the_csv() -> None:
    items = parse(NYC_JSON)
    case = by_id(items, "61276295")  # no incident_address: the intersection is the address
    assert case.address == "ST NICHOLAS AVENUE & WEST 178 STREET"
    assert case.requested_at == datetime(2024, 5, 27, 6, 8, 51, tzinfo=UTC)
    assert (case.lat, case.lon) == (40.84735682050765, -73.93517137747149)
    unlocated = by_id(items, "61279486")  # a blockface record: no latitude/longitude keys at all
    assert unlocated.lat is None and unlocated.address == "QUEENS BOULEVARD"


def test_dst_edges_resolve_with_fold_0() -> None:
    la = TimeParser(("%m/%d/%Y %I:%M:%S %p",), ZONES["la"])
    # 01:30 happened twice on 2018-11-04; fold=0 is the first one, still PDT (UTC-7).
    assert la.to_utc("11/04/2018 01:30:00 AM", "CreatedDate") == datetime(2018, 11, 4, 8, 30, tzinfo=UTC)
    # 02:30 never happened on 2018-03-11; fold=0 reads it with the offset before the gap (PST).
    assert la.to_utc("03/11/2018 02:30:00 AM", "CreatedDate") == datetime(2018, 3, 11, 10, 30, tzinfo=UTC)


# --- districts and Open311 -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("05 BROOKLYN", "305"),
        ("12 MANHATTAN", "112"),
        ("01 BRONX", "201"),
        ("14 QUEENS", "414"),
        ("03 STATEN ISLAND", "503"),
        ("64 MANHATTAN", "164"),  # Central Park joint interest area, a polygon of its own
        ("0 Unspecified", None),
        ("Unspecified BROOKLYN", None),
        ("", None),
        ("00 QUEENS", None),
        ("7 GOTHAM", None),
    ],
)
def test_nyc_community_board_to_borocd(text: str, expected: str | None) -> None:
    assert community_district(text) == expected


def test_nyc_unspecified_boards_have_no_district() -> None:
    items = parse("nyc/records/nyc_311_2023-12-10__kexinjiao_api.csv.gz")
    assert sum(c.reported_district is None for c in cases(items)) >= 299  # README: 299 rows of "0 Unspecified"


def test_open311_boston_fixture() -> None:
    items = parse(BOSTON)
    assert len(cases(items)) == 50
    first = by_id(items, "101006564854")
    assert first.requested_at == datetime(2026, 3, 11, 2, 30, tzinfo=UTC)
    assert first.contact is not None
    assert (first.contact.first_name, first.contact.last_name, first.contact.email, first.contact.phone) == (
        "Fake",
        "Fake",
        "fake@gmail.com",
        "1111111",
    )
    assert first.service_code == "illegal-parking" and first.media_url and first.closed_at is None
    assert by_id(items, "101006564853").contact is None  # extended_attributes has only x/y

    closed = [c for c in cases(items) if c.closed_at is not None]
    assert len(closed) == 10 and all(c.status_received == "closed" for c in closed)
    resolved = by_id(items, "101006564752")
    assert resolved.closed_at == datetime(2026, 3, 11, 2, 29, 1, tzinfo=UTC)  # updated_datetime
    assert resolved.resolution == "Case Resolved. This vehicle has a South Boston Resident parking."

    nowhere = by_id(items, "5fd47839-1237-4eb1-9d04-69fef8e93866")  # lat/long null, no address
    assert nowhere.lat is None and nowhere.lon is None and nowhere.address is None
    assert nowhere.closed_at is not None


def test_open311_rejects_do_not_keep_personal_data(tmp_path: Path) -> None:
    records = json.loads((DATA / BOSTON).read_text())
    records[0]["requested_datetime"] = "yesterday"
    records[1]["lat"] = "north"
    records[2]["service_request_id"] = None
    path = tmp_path / "requests.json"
    path.write_text(json.dumps(records))
    items = parse(path)
    assert [type(i).__name__ for i in items[:4]] == ["RejectedRow", "RejectedRow", "RejectedRow", "IncomingCase"]
    first, second, third = items[0], items[1], items[2]
    assert isinstance(first, RejectedRow) and first.reason == "bad date in 'requested_datetime': 'yesterday'"
    assert isinstance(second, RejectedRow) and second.reason.startswith("bad coordinates in 'lat'/'long': 'north'/")
    assert isinstance(third, RejectedRow) and third.reason == "missing id (column 'service_request_id')"
    kept = json.loads(first.raw["extended_attributes"])
    assert "email" not in kept and "first_name" not in kept and "phone" not in kept and "x" in kept


# --- broken input ------------------------------------------------------------------------------------


def test_truncated_gzip_raises_format_error(tmp_path: Path) -> None:
    data = (DATA / LA_2017).read_bytes()
    path = tmp_path / "half.csv.gz"
    path.write_bytes(data[: len(data) // 2])
    assert detect_format(path) == "la"  # the header is still readable
    seen = 0
    with pytest.raises(FormatError, match=r"file is truncated or corrupt after record \d+"):
        for batch in read_batches(path, tz=ZONES["la"], batch_size=500):
            seen += len(batch)
    assert 0 < seen < 8071  # what came before the damage was delivered; the caller decides


def test_truncated_json_raises_format_error(tmp_path: Path) -> None:
    text = gzip.decompress((DATA / NYC_JSON).read_bytes())
    path = tmp_path / "half.json"
    path.write_bytes(text[: len(text) // 2])
    with pytest.raises(FormatError, match="file is truncated or corrupt after record"):
        parse(path)


def test_undecodable_bytes_raise_format_error(tmp_path: Path) -> None:
    header, rows = csv_rows(CHI_ALLEY)
    path = write_csv(tmp_path / "latin1.csv", header, rows[:3000])
    data = path.read_bytes()
    cut = data.index(b"\n", len(data) // 2) + 1
    path.write_bytes(data[:cut] + "Alley Light Out,12-9,1-Apr-12,,CAF\xc9 ST,,,,,,,\n".encode("latin-1") + data[cut:])
    with pytest.raises(FormatError, match="file is truncated or corrupt after record"):
        parse(path)


def test_geojson_is_not_a_311_export() -> None:
    with pytest.raises(FormatError, match="not a recognised 311 export: a JSON object"):
        detect_format(DATA / "nyc/boundaries/nyc_boroughs_simplified.geojson")


def test_random_csv_is_not_a_311_export(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "people.csv", ["name", "age", "city"], [["Ada", "36", "London"]])
    with pytest.raises(FormatError, match=r"not a recognised 311 export: header has columns 'name', 'age', 'city'"):
        detect_format(path)
    with pytest.raises(FormatError):
        read_batches(path, tz=ZONES["la"])


def test_binary_and_empty_files_are_not_311_exports(tmp_path: Path) -> None:
    binary = tmp_path / "image.png"
    binary.write_bytes(bytes(range(256)) * 64)
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    other_json = tmp_path / "list.json"
    other_json.write_text('[{"id": 1, "when": "now"}]')
    for path in (binary, empty, other_json):
        with pytest.raises(FormatError, match="not a recognised 311 export"):
            detect_format(path)


def test_bad_values_become_rejects_naming_the_field(tmp_path: Path) -> None:
    header, all_rows = csv_rows(LA_2017)
    col = {name: header.index(name) for name in header}
    rows = [row for row in all_rows if row[col["Latitude"]]][:13]
    good = rows[:6]
    bad_date, bad_coords, out_of_range, no_id, no_type = (list(row) for row in rows[6:11])
    bad_date[col["CreatedDate"]] = "13/45/2017"
    bad_coords[col["Latitude"]] = "abc"
    out_of_range[col["Longitude"]] = "-218.2"
    no_id[col["SRNumber"]] = "  "
    no_type[col["RequestType"]] = ""
    short = rows[11][:-3]
    unlocated = list(rows[12])
    unlocated[col["Latitude"]] = unlocated[col["Longitude"]] = ""
    path = write_csv(
        tmp_path / "la.csv.gz", header, [*good, bad_date, bad_coords, out_of_range, no_id, no_type, short, unlocated], gz=True
    )
    items = parse(path, tz=ZONES["la"])
    assert len(items) == 13
    assert all(isinstance(item, IncomingCase) for item in items[:6])
    reasons = {item.line: item.reason for item in items if isinstance(item, RejectedRow)}
    assert reasons == {
        7: "bad date in 'CreatedDate': '13/45/2017'",
        8: f"bad coordinates in 'Latitude'/'Longitude': 'abc'/{rows[7][col['Longitude']]!r}",
        9: f"bad coordinates in 'Latitude'/'Longitude': {rows[8][col['Latitude']]!r}/'-218.2' (outside WGS84 range)",
        10: "missing id (column 'SRNumber')",
        11: "missing service type (column 'RequestType'): ''",
        12: "row has 30 fields, header has 33",
    }
    by_line = {item.line: item for item in items}
    assert by_line[7].raw["SRNumber"] == rows[6][0]  # type: ignore[union-attr]  # the record is kept whole
    last = by_line[13]
    assert isinstance(last, IncomingCase) and last.lat is None and last.lon is None


def test_projected_coordinates_that_are_garbage_are_rejected(tmp_path: Path) -> None:
    header, rows = csv_rows(CHI_ALLEY)
    x = header.index("x_coord")
    broken, endless, zero = list(rows[0]), list(rows[1]), list(rows[2])
    broken[x] = "1157924,797"
    endless[x] = "inf"
    zero[x] = zero[x + 1] = "0"
    items = parse(write_csv(tmp_path / "alley.csv", header, [broken, endless, zero, rows[3]]), tz=ZONES["chicago"])
    assert isinstance(items[0], RejectedRow) and items[0].reason.startswith("bad coordinates in 'x_coord'/'y_coord': '1157924,797'/")
    assert isinstance(items[1], RejectedRow) and items[1].reason.startswith("bad coordinates in 'x_coord'/'y_coord': 'inf'/")
    assert isinstance(items[2], IncomingCase) and (items[2].lat, items[2].lon) == (0.0, 0.0)  # left for the pipeline
    assert isinstance(items[3], IncomingCase) and 41.6 < items[3].lat < 42.1  # type: ignore[operator]


# --- helpers never raise anything but FieldError -----------------------------------------------------

_date_texts = st.one_of(
    st.text(max_size=40),
    st.from_regex(r"\A\d{1,2}/\d{1,2}/\d{4} \d{1,2}:\d{2}:\d{2} [AP]M\Z"),
    st.from_regex(r"\A\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?([+-]\d{2}:?\d{2}|Z)?\Z"),
    st.datetimes().map(lambda d: d.strftime("%m/%d/%Y %I:%M:%S %p")),
)
_number_texts = st.one_of(st.text(max_size=20), st.floats().map(repr), st.integers().map(str))


@settings(max_examples=300, deadline=None)
@given(_date_texts, st.sampled_from([*sorted(ZONES.values(), key=str), ZoneInfo("Pacific/Kiritimati"), ZoneInfo("UTC")]))
def test_time_parser_only_raises_field_error(text: str, tz: ZoneInfo) -> None:
    parser = TimeParser(
        ("%m/%d/%Y %I:%M:%S %p", "%Y-%m-%dT%H:%M:%S.%f", "%d-%b-%y", "%Y-%m-%dT%H:%M:%S%z"), tz
    )
    try:
        value = parser.to_utc(text, "Created")
    except FieldError as problem:
        assert str(problem).startswith("bad date in 'Created': ")
    else:
        assert value.tzinfo is UTC


@settings(max_examples=300, deadline=None)
@given(_number_texts, _number_texts)
def test_coordinate_helpers_only_raise_field_error(first: str, second: str) -> None:
    try:
        point = coordinate_pair(first, second, "lat", "lon")
    except FieldError as problem:
        assert str(problem).startswith("bad coordinates in 'lat'/'lon': ")
    else:
        assert point is None or (-90 <= point[0] <= 90 and -180 <= point[1] <= 180)
    try:
        xy = projected_pair(first, second, "x", "y")
    except FieldError:
        pass
    else:
        assert xy is None or all(math.isfinite(v) for v in xy)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=40))
def test_slug_and_district_helpers_never_raise(text: str) -> None:
    code = slug(text)
    assert code == code.strip("-") and "--" not in code and all(c.isascii() and (c.isalnum() or c == "-") for c in code)
    assert community_district(text) is None or community_district(text).isdigit()  # type: ignore[union-attr]


class _Trickle(io.StringIO):
    """A text stream that hands out at most 5 characters per read, so every JSON element
    and number crosses chunk edges."""

    def read(self, size: int | None = -1) -> str:
        return super().read(5)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_json_values, max_size=6), st.sampled_from(["", " ", "\n  "]))
def test_json_array_streaming_matches_json_loads(values: list[object], space: str) -> None:
    text = space + json.dumps(values, indent=1 if space else None) + space
    assert list(json_array_items(_Trickle(text))) == json.loads(text)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=30).map(lambda tail: "[" + tail))
def test_json_array_streaming_only_raises_decode_errors(text: str) -> None:
    with contextlib.suppress(json.JSONDecodeError):
        list(json_array_items(_Trickle(text)))


def test_slug_examples() -> None:
    assert slug("Street Lights - All/Out") == "street-lights-all-out"
    assert slug("Street Light - 1/Out") == "street-light-1-out"
    assert slug("  Noise - Residential ") == "noise-residential"


# --- memory and speed ------------------------------------------------------------------------------


def _peak_while_streaming(path: Path, tz: ZoneInfo) -> tuple[int, int]:
    tracemalloc.start()
    try:
        count = 0
        for batch in read_batches(path, tz=tz):
            count += len(batch)
        return tracemalloc.get_traced_memory()[1], count
    finally:
        tracemalloc.stop()


@pytest.mark.slow  # streams a large real export under tracemalloc
def test_streaming_memory_stays_flat(tmp_path: Path) -> None:
    largest = max((DATA / f for f, _, _ in FILES), key=lambda p: p.stat().st_size)
    peak, count = _peak_while_streaming(largest, ZONES[detect_format(largest)])
    print(f"\n{largest.name}: {count} records, tracemalloc peak {peak / 2**20:.1f} MiB")
    assert peak < 30 * 2**20

    # Five copies of a file must not need five times the memory: peak is one batch, not the file.
    header, rows = csv_rows(CHI_ALLEY)
    once = write_csv(tmp_path / "once.csv.gz", header, rows, gz=True)
    five = write_csv(tmp_path / "five.csv.gz", header, rows * 5, gz=True)
    peak_once, _ = _peak_while_streaming(once, ZONES["chicago"])
    peak_five, count_five = _peak_while_streaming(five, ZONES["chicago"])
    print(f"alley lights x1: peak {peak_once / 2**20:.1f} MiB; x5 ({count_five} records): {peak_five / 2**20:.1f} MiB")
    assert count_five == 5 * len(rows)
    assert peak_five < 1.5 * peak_once + 2**20


def test_parse_rate_report() -> None:
    lines = []
    total_rows = total_seconds = 0.0
    for relative, fmt, _ in FILES:
        path = DATA / relative
        started = time.perf_counter()
        count = sum(len(batch) for batch in read_batches(path, fmt=fmt, tz=ZONES[fmt]))
        seconds = time.perf_counter() - started
        total_rows += count
        total_seconds += seconds
        lines.append(f"  {path.name:62} {count:6d} rows {count / seconds:9.0f} rows/s")
    print("\nparse rate (single run, includes opening the file):\n" + "\n".join(lines))
    print(f"  {'all files':62} {int(total_rows):6d} rows {total_rows / total_seconds:9.0f} rows/s")
