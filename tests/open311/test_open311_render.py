"""The JSON and XML renderings of the GeoReport v2 shapes (pure functions, no server)."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from server.open311.render import (
    Attribute,
    AttributeValue,
    Format,
    ServiceDefinition,
    TokenLookup,
    format_datetime,
    render,
    render_errors,
    to_json,
    to_xml,
)


def test_xml_escapes_markup_and_drops_characters_xml_cannot_carry() -> None:
    token = TokenLookup(service_request_id="7", token="a<b>&\"c'\x00\x0b\ud800é✓")
    document = to_xml([token], root="service_requests", item="request")
    assert document.startswith(b'<?xml version="1.0" encoding="utf-8"?>\n<service_requests><request>')
    assert b"&lt;b&gt;&amp;" in document
    parsed = ET.fromstring(document)
    assert parsed.findtext("request/token") == "a<b>&\"c'é✓"


def test_lists_get_singular_elements_and_unset_fields_are_left_out() -> None:
    definition = ServiceDefinition(service_code="S1", attributes=[
        Attribute(variable=True, code="A", datatype="singlevaluelist", required=True, datatype_description=None,
                  order=1, description="Pick", values=[AttributeValue(key="k1", name="One")]),
        Attribute(variable=False, code="B", datatype="text", required=False, datatype_description=None,
                  order=2, description=None),
    ])
    root = ET.fromstring(to_xml(definition, root="service_definition"))
    first, second = root.findall("attributes/attribute")
    assert first.findtext("values/value/key") == "k1" and first.findtext("required") == "true"
    assert second.find("values") is None and second.findtext("variable") == "false"
    assert second.find("description") is not None and second.findtext("description") == ""
    body = json.loads(to_json(definition))
    assert "values" not in body["attributes"][1] and body["attributes"][1]["description"] is None


def test_errors_in_both_formats() -> None:
    as_json = render_errors(Format.JSON, 404, ["token 'x' not found"])
    assert as_json.status_code == 404
    assert json.loads(as_json.content) == [{"code": 404, "description": "token 'x' not found"}]
    as_xml = render_errors(Format.XML, 403, ["Invalid api_key received", "second"])
    root = ET.fromstring(as_xml.content)
    assert root.tag == "errors"
    assert [(e.findtext("code"), e.findtext("description")) for e in root.findall("error")] == [
        ("403", "Invalid api_key received"), ("403", "second")]
    assert render(Format.XML, [], root="service_requests", item="request").content.endswith(
        b"<service_requests></service_requests>")


def test_datetimes_carry_the_jurisdiction_offset() -> None:
    winter = datetime(2018, 12, 28, 17, 15, 0, 123456, tzinfo=UTC)
    summer = datetime(2018, 7, 1, 12, 0, tzinfo=UTC)
    la = ZoneInfo("America/Los_Angeles")
    assert format_datetime(winter, la) == "2018-12-28T09:15:00-08:00"
    assert format_datetime(summer, la) == "2018-07-01T05:00:00-07:00"
    assert format_datetime(None, la) is None
