"""Web Push notices to residents and crews: VAPID identity, subscriptions, the outbox that
changes write in their own transaction, and the sender that delivers it.

    vapid          the key pair (`fieldwork vapid`) and per-push-service signing
    subscriptions  checking and binding browsers' PushSubscriptions
    outbox         `on_work_order_event`: the work-order writer's one hook
    messages       payloads in the subscriber's language (catalog: the message files)
    sender         `Sender`: outbox → push services, each notice once
    encryption     the notices' encryption, in a process beside the sender's event loop
    api            the /api/push and /api/me/push-subscriptions routes

Import the modules themselves: this package imports nothing, so that the encryption
process starts with pywebpush alone, not the whole server.
"""
