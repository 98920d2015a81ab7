"""Optional extras shipped with django-conversions (not needed in production)."""
