"""``EncryptedTextField``: authenticated encryption (Fernet) for API keys at rest.

Keys come from ``CONVERSIONS["ENCRYPTION_KEYS"]``: the first encrypts, every one decrypts, so a
new key can be put first and ``manage.py conversions_rotate_keys`` re-encrypts the stored
values. Without configured keys one is derived from ``SECRET_KEY`` (system check W001 says so).

A value that no configured key can decrypt loads as ``UnreadableSecret`` instead of raising, so
the admin still opens and delivery can report the problem; saving it back keeps the ciphertext.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models

from django_conversions.conf import conversions_settings

_DERIVATION_SALT = b"django-conversions:api-key-encryption:v1"


class UnreadableSecret:
    """A stored secret that none of the configured encryption keys can decrypt."""

    def __init__(self, ciphertext: str) -> None:
        self.ciphertext = ciphertext

    def __str__(self) -> str:
        return "<unreadable: encrypted with a key missing from CONVERSIONS['ENCRYPTION_KEYS']>"

    __repr__ = __str__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UnreadableSecret) and other.ciphertext == self.ciphertext

    def __hash__(self) -> int:
        return hash(self.ciphertext)


def mask_secret(secret: object) -> str:
    """``••••••••abcd``: never more than the last four characters of a secret."""
    if isinstance(secret, UnreadableSecret):
        return "unreadable (encryption key missing)"
    text = str(secret or "")
    if len(text) < 12:  # too short to reveal even four characters safely
        return "•" * 8
    return "•" * 8 + text[-4:]


def redact(text: str, secret: object) -> str:
    """``text`` with every occurrence of ``secret`` masked (a provider may echo the key back)."""
    if isinstance(secret, str) and len(secret) >= 4 and secret in text:
        return text.replace(secret, mask_secret(secret))
    return text


def derived_key() -> bytes:
    """A Fernet key derived from SECRET_KEY, used only when no ENCRYPTION_KEYS are configured."""
    digest = hashlib.pbkdf2_hmac("sha256", settings.SECRET_KEY.encode(), _DERIVATION_SALT, 100_000)
    return base64.urlsafe_b64encode(digest)


_fernet_cache: dict[tuple[Any, ...], MultiFernet] = {}


def configured_keys() -> list[str | bytes]:
    keys = conversions_settings.ENCRYPTION_KEYS
    if isinstance(keys, str | bytes):
        keys = [keys]
    return list(keys)


def get_fernet() -> MultiFernet:
    keys = configured_keys() or [derived_key()]
    cache_key = tuple(keys)
    if cache_key not in _fernet_cache:
        try:
            _fernet_cache[cache_key] = MultiFernet([Fernet(key) for key in keys])
        except (ValueError, TypeError) as err:
            # Never echo the key material itself.
            raise ImproperlyConfigured(
                "CONVERSIONS['ENCRYPTION_KEYS'] holds a malformed key: each must be 32 url-safe "
                "base64-encoded bytes, as made by cryptography.fernet.Fernet.generate_key()."
            ) from err
    return _fernet_cache[cache_key]


def encrypt(plaintext: str) -> str:
    return get_fernet().encrypt(plaintext.encode("utf-8")).decode("ascii")


def decrypt(ciphertext: str) -> str | UnreadableSecret:
    try:
        return get_fernet().decrypt(ciphertext.encode("ascii")).decode("utf-8")
    except (InvalidToken, UnicodeError):
        return UnreadableSecret(ciphertext)


def rotate(ciphertext: str) -> str:
    """Re-encrypt with the first configured key (raises InvalidToken if no key can read it)."""
    return get_fernet().rotate(ciphertext.encode("ascii")).decode("ascii")


class EncryptedTextField(models.TextField):
    """Stores only Fernet ciphertext; Python code sees the plaintext."""

    description = "Encrypted text"

    def from_db_value(self, value: str | None, expression: Any, connection: Any) -> Any:
        if value is None or value == "":
            return value
        return decrypt(value)

    def get_prep_value(self, value: Any) -> Any:
        if value is None or value == "":
            return value
        if isinstance(value, UnreadableSecret):
            return value.ciphertext
        return encrypt(str(value))

    def to_python(self, value: Any) -> Any:
        return value

    def get_internal_type(self) -> str:
        return "TextField"
