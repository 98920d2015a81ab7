"""The public signals' objects, in a module that imports nothing of this package's.

Import them from ``django_conversions.signals`` in host code. Modules of this package that send
them (the outbox, delivery) import them from here, below the order receiver in
``signals.py``, which imports the outbox.

``event_queued(sender=ConversionEvent, events=[...])``
    New events were written to the outbox (pending or skipped).
``event_delivered(sender=ConversionEvent, event=...)``
    The provider accepted an event.
``event_failed(sender=ConversionEvent, event=..., reason=...)``
    An event failed for good (a permanent error, or retries ran out).

Each is sent after the database change is committed.

``request_answered(sender=TrackingSite, site=..., outcome=..., duration=..., events=...,
accepted=...)``
    A worker's request to a provider ended (answered, or cut off): its outcome (delivered
    when the provider took any of its events), its duration in seconds (None when nothing
    went out), how many events it carried and how many of them the provider accepted. Sent by
    the worker as the answer comes back, before it is recorded, once per request (not per
    event); for metrics (``django_conversions.metrics``).
"""

from __future__ import annotations

from django.dispatch import Signal

event_queued = Signal()
event_delivered = Signal()
event_failed = Signal()
request_answered = Signal()
