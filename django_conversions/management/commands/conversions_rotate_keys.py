"""``manage.py conversions_rotate_keys``: re-encrypt every stored API key with the first key.

Put a new key first in ``CONVERSIONS["ENCRYPTION_KEYS"]`` (keep the old ones after it), deploy,
run this command, then drop the old keys. Keys no configured key can read are listed by id,
label and site, and left as they are: the command never stops halfway because of one of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cryptography.fernet import InvalidToken
from django.core.management.base import BaseCommand, CommandParser
from django.db.models import TextField
from django.db.models.functions import Cast
from django.views.decorators.debug import sensitive_variables

from django_conversions.conf import SETTING_NAME
from django_conversions.fields import Ciphertext, configured_keys, rotate, uses_primary_key
from django_conversions.models import ApiKey


@dataclass
class RotationReport:
    rotated: int = 0
    already_current: int = 0
    changed_meanwhile: int = 0
    unreadable: list[ApiKey] = field(default_factory=list)


@sensitive_variables("api_key")
def rotate_all(*, dry_run: bool = False) -> RotationReport:
    """Re-encrypt each key on its own, with a compare-and-set so a concurrent edit wins."""
    report = RotationReport()
    rows = (
        ApiKey.objects.select_related("site")
        .annotate(stored=Cast("key", output_field=TextField()))
        .order_by("pk")
    )
    for api_key in rows.iterator(chunk_size=200):
        stored: str = api_key.stored  # type: ignore[attr-defined]
        if not stored:
            continue
        try:
            fresh = rotate(stored)
        except InvalidToken:
            report.unreadable.append(api_key)
            continue
        if uses_primary_key(stored):
            report.already_current += 1
        if dry_run:
            report.rotated += 1
            continue
        updated = ApiKey.objects.filter(pk=api_key.pk, key=Ciphertext(stored)).update(
            key=Ciphertext(fresh)
        )
        if updated:
            report.rotated += 1
        else:
            report.changed_meanwhile += 1
    return report


class Command(BaseCommand):
    help = (
        f"Re-encrypt every stored API key with the first key in {SETTING_NAME}['ENCRYPTION_KEYS'] "
        "and list the keys no configured key can decrypt."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run", action="store_true", help="Report what would change; write nothing."
        )

    def handle(self, *args: Any, dry_run: bool, **options: Any) -> None:
        if not configured_keys():
            self.stdout.write(
                f"{SETTING_NAME}['ENCRYPTION_KEYS'] is not set: keys are encrypted with the key "
                "derived from SECRET_KEY."
            )
        report = rotate_all(dry_run=dry_run)
        verb = "Would re-encrypt" if dry_run else "Re-encrypted"
        self.stdout.write(
            f"{verb} {report.rotated} API key(s) with the first encryption key "
            f"({report.already_current} already used it)."
        )
        if report.changed_meanwhile:
            self.stdout.write(
                f"{report.changed_meanwhile} API key(s) changed while the command ran and were "
                "left as saved (new values are encrypted with the first key already)."
            )
        if report.unreadable:
            self.stderr.write(
                f"{len(report.unreadable)} API key(s) can't be decrypted with any configured key "
                "and were left unchanged:"
            )
            for api_key in report.unreadable:
                site = api_key.site
                self.stderr.write(
                    f"  API key {api_key.pk} {api_key.label or '(no label)'!r} of site "
                    f"{site.pk} {site.name!r} ({site.provider})"
                )
            self.stderr.write(
                f"Add the key they were encrypted with to {SETTING_NAME}['ENCRYPTION_KEYS'] "
                "(after the first) and run this command again, or paste these API keys again "
                "in the admin."
            )
        elif not dry_run:
            self.stdout.write(self.style.SUCCESS("Every stored API key uses the first key."))
