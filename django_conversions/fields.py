"""``EncryptedTextField``: authenticated encryption (Fernet) for API keys at rest.

Keys come from ``CONVERSIONS["ENCRYPTION_KEYS"]``: the first encrypts, every one decrypts, so a
new key can be put first and ``manage.py conversions_rotate_keys`` re-encrypts the stored
values. Without configured keys one is derived from ``SECRET_KEY`` (system check W001 says so).
Keys derived from ``SECRET_KEY`` and ``SECRET_KEY_FALLBACKS`` always stay readable, so moving from
the derived key to configured keys (or rotating ``SECRET_KEY`` the Django way) loses nothing.

A value that no configured key can decrypt loads as ``UnreadableSecret`` instead of raising, so
the admin still opens and delivery can report the problem; saving it back keeps the ciphertext.

Serialization (``dumpdata``, fixtures) writes the ciphertext, never the plaintext, and
deserialization (``loaddata``) takes a Fernet token back as the ciphertext it is: a dump holds no
key in clear and a round trip gives the same keys, without encrypting them twice.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models

from django_conversions.conf import SETTING_NAME, conversions_settings

_DERIVATION_SALT = b"django-conversions:api-key-encryption:v1"


class Ciphertext:
    """A value that is already encrypted: the field stores it as it is (used by rotation)."""

    def __init__(self, ciphertext: str) -> None:
        self.ciphertext = ciphertext

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.ciphertext == self.ciphertext  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self.ciphertext)


class UnreadableSecret(Ciphertext):
    """A stored secret that none of the configured encryption keys can decrypt."""

    def __str__(self) -> str:
        return f"<unreadable: encrypted with a key missing from {SETTING_NAME}['ENCRYPTION_KEYS']>"

    __repr__ = __str__


class Secret(str):
    """A decrypted key: the plaintext for every use, masked in its ``repr()``.

    Debug pages (Django's technical 500 page with DEBUG=True, which ``sensitive_variables``
    does not cleanse), ``%r`` in log lines and tracebacks show a frame's variables by their
    repr: there a key reads ``'••••••••1c2d'``. ``str(secret)`` and formatting give the plaintext.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return repr(mask_secret(str(self)))


def as_secret(value: object) -> Secret:
    """``value`` (a key, maybe with surrounding spaces) as a trimmed ``Secret``."""
    return Secret(str(value or "").strip())


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


@functools.lru_cache(maxsize=8)
def _derive(secret_key: str) -> bytes:
    # PBKDF2 is slow on purpose: compute once per SECRET_KEY, not per encrypt/decrypt.
    digest = hashlib.pbkdf2_hmac("sha256", secret_key.encode(), _DERIVATION_SALT, 100_000)
    return base64.urlsafe_b64encode(digest)


def derived_key() -> bytes:
    """A Fernet key derived from SECRET_KEY, used to encrypt when no ENCRYPTION_KEYS are set."""
    return _derive(settings.SECRET_KEY)


def _fallback_keys() -> list[bytes]:
    """Keys derived from SECRET_KEY and its fallbacks: always accepted for decryption."""
    secrets = [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", ())]
    return [_derive(secret) for secret in secrets if secret]


def configured_keys() -> list[str | bytes]:
    """``ENCRYPTION_KEYS`` as a list (a single key may be given as a string)."""
    keys = conversions_settings.ENCRYPTION_KEYS
    if isinstance(keys, str | bytes):
        return [keys]
    if not isinstance(keys, list | tuple):
        raise ImproperlyConfigured(
            f"{SETTING_NAME}['ENCRYPTION_KEYS'] must be a list of Fernet keys, "
            f"not {type(keys).__name__}."
        )
    return list(keys)


def _fernet(key: str | bytes, position: int) -> Fernet:
    try:
        return Fernet(key)
    except (ValueError, TypeError) as err:
        # Name the position, never the key material itself.
        raise ImproperlyConfigured(
            f"{SETTING_NAME}['ENCRYPTION_KEYS'][{position}] is not a valid key: each must be 32 "
            "url-safe base64-encoded bytes, as made by cryptography.fernet.Fernet.generate_key()."
        ) from err


_fernet_cache: dict[tuple[Any, ...], MultiFernet] = {}


def get_fernet() -> MultiFernet:
    """Encrypts with the first configured key (or the derived one); decrypts with any."""
    configured = configured_keys()
    fallbacks = _fallback_keys()
    cache_key = (tuple(configured), tuple(fallbacks))
    if cache_key not in _fernet_cache:
        fernets = [_fernet(key, position) for position, key in enumerate(configured)]
        fernets += [Fernet(key) for key in fallbacks]
        _fernet_cache[cache_key] = MultiFernet(fernets)
    return _fernet_cache[cache_key]


def primary_fernet() -> Fernet:
    """The key new values are encrypted with."""
    configured = configured_keys()
    return _fernet(configured[0], 0) if configured else Fernet(derived_key())


# A Fernet token: version byte 0x80, 8-byte timestamp, 16-byte IV, AES blocks, 32-byte HMAC.
_TOKEN_OVERHEAD = 1 + 8 + 16 + 32
_TOKEN_TEXT = re.compile(r"gA[A-Za-z0-9_-]+={0,2}")


def looks_like_ciphertext(value: str) -> bool:
    """Is ``value`` shaped like a Fernet token (what the field stores and serializes)?"""
    if not _TOKEN_TEXT.fullmatch(value):
        return False
    try:
        raw = base64.urlsafe_b64decode(value)
    except ValueError:
        return False
    blocks = len(raw) - _TOKEN_OVERHEAD
    return raw[:1] == b"\x80" and blocks >= 16 and blocks % 16 == 0


def encrypt(plaintext: str) -> str:
    return get_fernet().encrypt(plaintext.encode("utf-8")).decode("ascii")


def decrypt(ciphertext: str) -> Secret | UnreadableSecret:
    try:
        return Secret(get_fernet().decrypt(ciphertext.encode("ascii")).decode("utf-8"))
    except (InvalidToken, UnicodeError):
        return UnreadableSecret(ciphertext)


def rotate(ciphertext: str) -> str:
    """Re-encrypt with the first configured key (raises InvalidToken if no key can read it)."""
    try:
        token = ciphertext.encode("ascii")
    except UnicodeError as err:
        raise InvalidToken from err
    return get_fernet().rotate(token).decode("ascii")


def uses_primary_key(ciphertext: str) -> bool:
    """Was this value encrypted with the key new values get (nothing to rotate)?"""
    try:
        primary_fernet().decrypt(ciphertext.encode("ascii"))
    except (InvalidToken, UnicodeError):
        return False
    return True


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
        if isinstance(value, Ciphertext):
            return value.ciphertext
        return encrypt(str(value))

    def to_python(self, value: Any) -> Any:
        # Deserializers (loaddata) hand over what value_to_string() wrote: a Fernet token. It
        # is read as the secret it holds, or kept as it is when no configured key can read it.
        if isinstance(value, str) and looks_like_ciphertext(value):
            return decrypt(value)
        return value

    def value_to_string(self, obj: models.Model) -> str:
        """What serializers (dumpdata) write: the ciphertext, never the plaintext."""
        value = self.value_from_object(obj)
        if value is None or value == "":
            return ""
        return str(self.get_prep_value(value))

    def get_internal_type(self) -> str:
        return "TextField"
