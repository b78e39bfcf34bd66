"""The push service's origin, found without `urlsplit` for ordinary endpoints: always what
`urlsplit` says (Hypothesis: generated endpoints, and any text at all)."""

from __future__ import annotations

from urllib.parse import urlsplit

from hypothesis import given
from hypothesis import strategies as st

from server.notify.vapid import audience


def by_urlsplit(endpoint: str) -> str:
    parts = urlsplit(endpoint)
    return f"{parts.scheme}://{parts.netloc}"


hosts = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?(\.[a-z0-9]{1,10}){0,3}", fullmatch=True)
endpoints = st.builds(
    lambda scheme, user, host, port, path, query, fragment: f"{scheme}://{user}{host}{port}{path}{query}{fragment}",
    st.sampled_from(["https", "http", "HTTPS", "wss"]),
    st.sampled_from(["", "user@", "u:p@"]),
    hosts | st.sampled_from(["[::1]", "127.0.0.1", "fcm.googleapis.com"]),
    st.sampled_from(["", ":443", ":8080"]),
    st.sampled_from(["", "/", "/push/v2/abc-DEF_123", "/wpush/v2/a/b/c"]),
    st.sampled_from(["", "?x=1", "?a/b"]),
    st.sampled_from(["", "#frag", "#a/b?c"]),
)


@given(endpoints)
def test_ordinary_endpoints(endpoint: str) -> None:
    assert audience(endpoint) == by_urlsplit(endpoint)


@given(st.text())
def test_any_text(endpoint: str) -> None:
    assert audience(endpoint) == by_urlsplit(endpoint)


def test_known_endpoints() -> None:
    assert audience("https://fcm.googleapis.com/fcm/send/abc:def") == "https://fcm.googleapis.com"
    assert audience("https://updates.push.services.mozilla.com/wpush/v2/gAAA") == "https://updates.push.services.mozilla.com"
    assert audience("http://127.0.0.1:8123/push/1?x#y") == "http://127.0.0.1:8123"
