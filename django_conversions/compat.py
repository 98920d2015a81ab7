"""The Django Tasks framework: ``django.tasks`` on Django 6, the backport on Django 5.2."""

from __future__ import annotations

try:  # Django >= 6.0
    from django.tasks import task, task_backends
    from django.tasks.exceptions import InvalidTaskBackend as InvalidTaskBackendError
except ImportError:  # Django 5.2 with the backport
    from django_tasks import task, task_backends  # type: ignore[no-redef]
    from django_tasks.exceptions import InvalidTaskBackendError  # type: ignore[no-redef]

__all__ = ["InvalidTaskBackendError", "task", "task_backends"]
