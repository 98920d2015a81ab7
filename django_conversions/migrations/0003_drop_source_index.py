# Nothing looks events up by their source (an order's events are found by order_reference),
# and every index is written on every checkout.

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ('django_conversions', '0002_event_indexes'),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name='conversionevent',
            name='conversions_event_src',
        ),
    ]
