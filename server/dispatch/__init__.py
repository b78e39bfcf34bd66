"""Dispatchers change work orders: assign and reassign, status (cancel, hold, reopen),
priority, shared notes, removal; and review what crews' offline edits could not apply."""

from server.dispatch.api import dispatch_router

__all__ = ["dispatch_router"]
