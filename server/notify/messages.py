"""Push payloads, written in the subscriber's language from the message catalogues.

Resident notice: {"title", "body", "url", "tag", "lang", "dir"}; `url` opens the case's
tracking page in that language, `tag` lets a newer notice about the same case replace an
older one on the phone. Crew notice (the crew app's contract): {"title", "body", "url"}
with url `/crew/#/jobs/<id>`.

A payload is at most `MAX_PAYLOAD_BYTES` of UTF-8 JSON: with aes128gcm's 86-byte header,
its padding delimiter and 16-byte tag, the encrypted body stays within the 4,096 bytes
every push service accepts. Long free text (a crew's reason) is cut, never the JSON.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from server.notify.catalog import RTL_LANGUAGES, catalog

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "RESIDENT_KINDS",
    "crew_payload",
    "encode_payload",
    "resident_payload",
]

MAX_PAYLOAD_BYTES = 3800
MAX_REASON_CHARS = 300
# What a resident hears about, and the catalogue keys of each: push.<kind>.title / .body.
RESIDENT_KINDS = ("acknowledged", "scheduled", "completed", "cannot_complete", "cancelled", "reopened")


def _cut(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def encode_payload(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def _fit(payload: dict[str, Any]) -> dict[str, Any]:
    """Shorten the body until the encoded payload fits (titles and URLs are short)."""
    while len(encode_payload(payload)) > MAX_PAYLOAD_BYTES and payload["body"]:
        payload["body"] = _cut(payload["body"], max(len(payload["body"]) * 3 // 4, 1))
    return payload


def resident_payload(
    kind: str, *, language: str, case_id: int, service: str, token: str, reason: str | None = None
) -> dict[str, Any]:
    texts = catalog("resident")
    params = {"number": case_id, "service": _cut(service, 80)}
    body_key = f"push.{kind}.body"
    if reason and texts.has("en", f"push.{kind}.body_reason"):
        body_key = f"push.{kind}.body_reason"
        params["reason"] = _cut(reason, MAX_REASON_CHARS)
    return _fit({
        "title": texts.t(language, f"push.{kind}.title", **params),
        "body": texts.t(language, body_key, **params),
        "url": f"/track/{quote(token, safe='')}?lang={quote(language, safe='')}",
        "tag": f"case-{case_id}",
        "lang": language,
        "dir": "rtl" if language in RTL_LANGUAGES else "ltr",
    })


def crew_payload(*, language: str, work_order_id: int, number: str, service: str, address: str | None,
                 emergency: bool) -> dict[str, Any]:
    texts = catalog("crew")
    params = {"number": number, "service": _cut(service, 80), "address": _cut(address or "", 120)}
    title_key = "assigned.emergency.title" if emergency else "assigned.title"
    body_key = "assigned.body" if address else "assigned.body_no_address"
    return _fit({
        "title": texts.t(language, title_key, **params),
        "body": texts.t(language, body_key, **params),
        "url": f"/crew/#/jobs/{work_order_id}",
    })
