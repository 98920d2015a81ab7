"""The provider registry: ``TrackingSite.provider`` id -> Provider class.

Built-in providers are listed here; more come from ``CONVERSIONS["PROVIDERS"]`` (dotted paths),
registered explicitly rather than discovered by import side effects. An entry whose ``id`` is a
built-in's replaces that built-in (to customise it); two entries with one id are an error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.core.signals import setting_changed
from django.utils.module_loading import import_string

from django_conversions.conf import SETTING_NAME, conversions_settings, import_setting
from django_conversions.exceptions import UnknownProvider
from django_conversions.providers.base import Provider, SiteConfig

if TYPE_CHECKING:
    from django_conversions.models import TrackingSite

BUILTIN_PROVIDERS = (
    "django_conversions.providers.scanova.ScanovaProvider",
    "django_conversions.providers.vtmarketing.VTMarketingProvider",
)


class ProviderRegistry:
    def __init__(self) -> None:
        self._classes: dict[str, type[Provider]] | None = None

    def _load(self) -> dict[str, type[Provider]]:
        if self._classes is None:
            classes: dict[str, type[Provider]] = {}
            for path in BUILTIN_PROVIDERS:
                cls = import_string(path)
                classes[cls.id] = cls
            paths = conversions_settings.raw("PROVIDERS")
            if isinstance(paths, str):
                paths = [paths]
            configured: dict[str, str] = {}
            for path in paths:
                cls = import_setting("PROVIDERS", path)
                _check_class(path, cls)
                if cls.id in configured:
                    raise UnknownProvider(
                        f"CONVERSIONS['PROVIDERS'] lists two providers with id {cls.id!r}: "
                        f"{configured[cls.id]!r} and {path!r}."
                    )
                configured[cls.id] = path
                classes[cls.id] = cls
            self._classes = classes
        return self._classes

    def get_class(self, provider_id: str) -> type[Provider]:
        try:
            return self._load()[provider_id]
        except KeyError:
            raise UnknownProvider(
                f"No provider with id {provider_id!r}. Known ids: {', '.join(self.ids())}. "
                "Register extra providers in CONVERSIONS['PROVIDERS']."
            ) from None

    def ids(self) -> list[str]:
        return sorted(self._load())

    def as_choices(self) -> list[tuple[str, str]]:
        return sorted((cls.id, cls.name) for cls in self._load().values())

    def reset(self) -> None:
        self._classes = None


def _check_class(path: str, cls: object) -> None:
    if not (isinstance(cls, type) and issubclass(cls, Provider)):
        raise UnknownProvider(
            f"CONVERSIONS['PROVIDERS'] entry {path!r} is not a Provider subclass."
        )
    for attribute in ("id", "name", "default_base_url", "event_path", "auth_header"):
        if not isinstance(getattr(cls, attribute, None), str) or not getattr(cls, attribute):
            raise UnknownProvider(
                f"CONVERSIONS['PROVIDERS'] entry {path!r} has no {attribute!r}: set it as a "
                "class attribute (see docs/providers/adding.md)."
            )


registry = ProviderRegistry()


def for_site(site: TrackingSite) -> Provider:
    """A provider for ``site`` (``TrackingSite.provider_instance()``), set up with the site's
    own id and endpoint and the configured batch size."""
    config = SiteConfig(
        provider_site_id=site.provider_site_id,
        endpoint_url=site.endpoint_url,
        batch_size=conversions_settings.BATCH_SIZE,
    )
    return registry.get_class(site.provider)(config)


def provider_choices() -> list[tuple[str, str]]:
    """``TrackingSite.provider``'s choices: every registered provider."""
    return registry.as_choices()


def _reset_on_setting_changed(*, setting: str, **kwargs: Any) -> None:
    # CONVERSIONS["PROVIDERS"] may have changed (override_settings in tests).
    if setting == SETTING_NAME:
        registry.reset()


setting_changed.connect(_reset_on_setting_changed, dispatch_uid="conversions_provider_registry")

__all__ = ["Provider", "ProviderRegistry", "for_site", "provider_choices", "registry"]
