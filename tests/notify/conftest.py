"""The push tests' shared set-up, one per test module: settings that allow the loopback push
service, the VAPID key pair with service types and a crew, and the push-service stand-in."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from server.notify.vapid import VapidIdentity
from server.settings import Settings
from tests.notify.pushservice import PushService
from tests.notify.support import prepare, push_settings


@pytest.fixture(scope="module")
def settings(database_url: str) -> Settings:
    return push_settings(database_url)


@pytest.fixture(scope="module")
def identity(engine: Engine) -> VapidIdentity:
    return prepare(engine)


@pytest.fixture(scope="module")
def push(identity: VapidIdentity) -> Iterator[PushService]:
    with PushService(expected_key=identity.public_key) as service:
        yield service
