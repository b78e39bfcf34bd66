"""Crews' offline sync: the work-order mutators, what a device may pull, and the HTTP
routes that mount the generic `sync` engine under /sync/v1."""
