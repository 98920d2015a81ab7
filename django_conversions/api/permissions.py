"""Default permission policy: staff users holding the app's model permissions for events.

``GET`` needs ``view_conversionevent``, ``POST events/`` ``add_conversionevent`` and
``POST events/{event_id}/retry/`` ``change_conversionevent`` (a view sets ``required_action``
when its action is not the one its method implies). Superusers may do everything. Replace the
policy with ``CONVERSIONS["API_PERMISSION_CLASSES"]``.
"""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import BasePermission
from rest_framework.request import Request

METHOD_ACTIONS = {
    "GET": "view",
    "HEAD": "view",
    "OPTIONS": "view",
    "POST": "add",
    "PUT": "change",
    "PATCH": "change",
    "DELETE": "delete",
}


def required_permission(request: Request, view: Any) -> str | None:
    """``"django_conversions.view_conversionevent"`` and the like; None for unknown methods."""
    action = getattr(view, "required_action", None) or METHOD_ACTIONS.get(request.method or "")
    if action is None:
        return None
    model = view.get_queryset().model
    return f"{model._meta.app_label}.{action}_{model._meta.model_name}"


class IsStaffWithModelPermissions(BasePermission):
    """Staff users with the model permission for the action; superusers always."""

    message = "You need to be a staff user with the permission for this action."

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        if not user or not user.is_authenticated or not user.is_active:
            return False
        if user.is_superuser:
            return True
        permission = required_permission(request, view)
        return bool(user.is_staff and permission and user.has_perm(permission))
