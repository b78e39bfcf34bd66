"""Web Push notices to residents and crews: VAPID identity, subscriptions, the outbox that
changes write in their own transaction, and the sender that delivers it.

    vapid          the key pair (`fieldwork vapid`) and per-push-service signing
    subscriptions  checking and binding browsers' PushSubscriptions
    outbox         `on_work_order_event`: the work-order writer's one hook
    messages       payloads in the subscriber's language (catalog: the message files)
    sender         `Sender`: outbox → push services, each notice once
    api            the /api/push and /api/me/push-subscriptions routes
"""

from server.notify.outbox import crew_job_assigned, on_work_order_event
from server.notify.sender import Sender, SendStats
from server.notify.vapid import PushNotConfigured, VapidSigner, ensure_keys, load_identity

__all__ = [
    "PushNotConfigured",
    "SendStats",
    "Sender",
    "VapidSigner",
    "crew_job_assigned",
    "ensure_keys",
    "load_identity",
    "on_work_order_event",
]
