"""JSON request bodies with bounded nesting, for every route.

msgspec (Litestar's decoder) raises RecursionError, not a DecodeError, for JSON nested
deeper than Python's recursion limit, and Litestar maps only DecodeError to a 400; so a
body of ten thousand `[` was a 500 on every JSON route, the public sign-in included. And a
body just under that limit decodes but can fail later, wherever the value is walked or
encoded again (a mutation's args stored as JSON). So the app's request class refuses
JSON nested deeper than MAX_JSON_DEPTH levels at the door: 400 naming the body. Malformed
JSON is a 400 naming the body too (Litestar's own answer names nothing).
"""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.exceptions import SerializationException

from server.errors import ValidationFailed

__all__ = ["MAX_JSON_DEPTH", "BoundedJSONRequest", "nested_deeper_than"]

MAX_JSON_DEPTH = 32


def nested_deeper_than(value: Any, limit: int) -> bool:
    """True if `value` has lists or objects more than `limit` levels deep (no recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def _too_deep() -> ValidationFailed:
    return ValidationFailed(f"the JSON body is nested deeper than {MAX_JSON_DEPTH} levels", field="body")


class BoundedJSONRequest(Request[Any, Any, Any]):
    """Litestar's request, whose `json()` refuses bodies nested too deeply (400, field body)."""

    async def json(self) -> Any:
        try:
            value = await super().json()
        except RecursionError:
            raise _too_deep() from None
        except SerializationException as exc:  # Litestar would answer 400 without naming the body
            raise ValidationFailed(f"the body is not valid JSON: {exc}", field="body") from None
        if isinstance(value, dict | list):
            body = await self.body()
            # Cheap first: a body with few brackets cannot be deep.
            if body.count(b"[") + body.count(b"{") > MAX_JSON_DEPTH and nested_deeper_than(value, MAX_JSON_DEPTH):
                raise _too_deep()
        return value
