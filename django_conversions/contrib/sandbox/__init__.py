"""A local stand-in for the providers' APIs, for tests, demos and a shop's own integration tests.

Add ``"django_conversions.contrib.sandbox"`` to ``INSTALLED_APPS``, mount its URLs (for example
``path("sandbox/", include("django_conversions.contrib.sandbox.urls"))``) and point tracking
sites at ``http://<host>/sandbox/scanova`` and ``http://<host>/sandbox/vtmarketing``. See
docs/sandbox.md. Never mount it on a production site.
"""
