"""Mount under a prefix, e.g. ``path("sandbox/", include(...))``; a tracking site then uses
``http://<host>/sandbox/scanova`` or ``http://<host>/sandbox/vtmarketing`` as its endpoint URL."""

from __future__ import annotations

from django.urls import path, re_path

from django_conversions.contrib.sandbox import views

app_name = "conversions_sandbox"

urlpatterns = [
    path("scanova/server-events", views.scanova_event, name="scanova-event"),
    path("scanova/server-events/batch", views.scanova_batch, name="scanova-batch"),
    path("vtmarketing/v1/event/", views.vtmarketing_event, name="vtmarketing-event"),
    # Stand-ins for the providers' front-end scripts (docs/frontend.md).
    re_path(
        r"^(?P<provider>scanova|vtmarketing)/tracker\.js$",
        views.tracker_script,
        name="tracker-script",
    ),
]
