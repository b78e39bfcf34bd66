"""Settings that hold across workers, hosts and restarts, with the app started directly
through Hypercorn's factory (`hypercorn "server.app:create_app()"`, no CLI, no
FIELDWORK_AUTH_SECRET): two servers on one database stand for two hosts.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import httpx
import pytest
from sqlalchemy import Engine

from server.settings import Settings
from tests.conftest import LiveServer
from tests.sync_http.support import PASSWORD, seed

pytestmark = pytest.mark.slow  # two servers, a restart and some thirty password checks


@pytest.fixture(scope="module")
def hosts(settings: Settings, engine: Engine) -> Iterator[tuple[LiveServer, LiveServer]]:
    seed(engine, per_crew=1)
    no_secret = replace(settings, auth=replace(settings.auth, secret=None))
    first, second = LiveServer(no_secret), LiveServer(no_secret)
    first.start()
    second.start()
    yield first, second
    first.stop()
    second.stop()


def sign_in(server: LiveServer, username: str, password: str = PASSWORD) -> httpx.Response:
    return httpx.post(f"{server.url}/api/auth/sign-in", json={"username": username, "password": password},
                      timeout=10)


def test_a_token_from_one_host_is_valid_on_the_other_and_after_a_restart(
    hosts: tuple[LiveServer, LiveServer],
) -> None:
    first, second = hosts
    response = sign_in(first, "dispatcher")
    assert response.status_code == 200, response.text
    headers = {"Authorization": f"Bearer {response.json()['token']}"}
    assert httpx.get(f"{second.url}/api/me", headers=headers, timeout=10).status_code == 200
    from_second = {"Authorization": f"Bearer {sign_in(second, 'dispatcher').json()['token']}"}
    assert httpx.get(f"{first.url}/api/me", headers=from_second, timeout=10).status_code == 200

    first.stop()
    first.start()
    assert httpx.get(f"{first.url}/api/me", headers=headers, timeout=10).status_code == 200
    # A token signed with another secret is still refused.
    forged = {"Authorization": "Bearer " + response.json()["token"][:-4] + "AAAA"}
    assert httpx.get(f"{first.url}/api/me", headers=forged, timeout=10).status_code == 401


def test_the_per_address_sign_in_limit_counts_across_hosts(hosts: tuple[LiveServer, LiveServer]) -> None:
    first, second = hosts
    # 30 attempts a minute per address, wherever they land. Alternate between the hosts,
    # each attempt for another (unknown) username so that the per-username limit stays out.
    # Counted per process, each host would let 30 through: 60 before the first 429.
    statuses: list[int] = []
    for n in range(40):
        statuses.append(sign_in((first, second)[n % 2], f"nobody-{n:02d}", "wrong-password-1").status_code)
        if statuses[-1] == 429:
            break
    assert statuses[-1] == 429 and set(statuses[:-1]) == {401}
    assert len(statuses) <= 31  # (this module's earlier sign-ins count too)
    for host in (first, second):
        refused = sign_in(host, "dispatcher")  # the right password, but the address is spent
        assert refused.status_code == 429, refused.text
        assert "retry-after" in {k.lower() for k in refused.headers}
