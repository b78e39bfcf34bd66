"""The console's API tests run on the same seeded server as the work-order API tests."""

from __future__ import annotations

from tests.api.conftest import api, seed

__all__ = ["api", "seed"]
