"""The migrations describe the models as they are: a model change without its migration fails."""

from __future__ import annotations

import pytest
from django.core.management import call_command


@pytest.mark.django_db
def test_the_models_need_no_new_migration() -> None:
    # --check exits with an error when a migration is missing; --dry-run writes nothing.
    call_command("makemigrations", "django_conversions", "--check", "--dry-run", verbosity=0)
