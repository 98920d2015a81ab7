"""django-oscar integration: Oscar's orders reported with settings alone.

Add ``"django_conversions.contrib.oscar"`` to ``INSTALLED_APPS`` and set
``CONVERSIONS["ORDER_ADAPTER"] = "django_conversions.contrib.oscar.adapters.OscarOrderAdapter"``
(leave ``ORDER_MODEL`` unset). Orders are tracked on Oscar's ``order_placed`` signal, once their
lines exist, or on ``order_status_changed`` with ``CONVERSIONS["OSCAR_PAID_STATUSES"]``. See
docs/oscar.md.
"""
