"""The Django Tasks framework: ``django.tasks`` on Django 6, the backport on Django 5.2."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # django-stubs describe django.tasks; the backport has the same interface
    from django.tasks import task, task_backends
    from django.tasks.backends.base import BaseTaskBackend
    from django.tasks.backends.immediate import ImmediateBackend
    from django.tasks.base import TaskResult, TaskResultStatus
    from django.tasks.exceptions import InvalidTaskBackend as InvalidTaskBackendError
else:
    try:  # Django >= 6.0
        from django.tasks import task, task_backends
        from django.tasks.backends.base import BaseTaskBackend
        from django.tasks.backends.immediate import ImmediateBackend
        from django.tasks.base import TaskResult, TaskResultStatus
        from django.tasks.exceptions import InvalidTaskBackend as InvalidTaskBackendError
    except ImportError:  # Django 5.2 with the backport
        from django_tasks import task, task_backends
        from django_tasks.backends.base import BaseTaskBackend
        from django_tasks.backends.immediate import ImmediateBackend
        from django_tasks.base import TaskResult, TaskResultStatus
        from django_tasks.exceptions import InvalidTaskBackendError

__all__ = [
    "BaseTaskBackend",
    "ImmediateBackend",
    "InvalidTaskBackendError",
    "TaskResult",
    "TaskResultStatus",
    "task",
    "task_backends",
]
