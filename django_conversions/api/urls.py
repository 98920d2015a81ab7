"""URLs of the API; include them under a prefix of your choice::

path("api/conversions/", include("django_conversions.api.urls")),
"""

from __future__ import annotations

from django.urls import path

from . import schema, views

app_name = "django_conversions_api"

urlpatterns = [
    path("events/", views.EventListView.as_view(), name="event-list"),
    path("events/<uuid:event_id>/", views.EventDetailView.as_view(), name="event-detail"),
    path("events/<uuid:event_id>/retry/", views.EventRetryView.as_view(), name="event-retry"),
    path("scan-session/", views.ScanSessionView.as_view(), name="scan-session"),
    path("schema/", schema.SchemaView.as_view(), name="schema"),
]
