# Issue 15/20 storage: an order_reference index without the pattern-matching twin nobody
# reads, and a lease index holding only the events being sent.

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('django_conversions', '0003_site_frontend'),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name='conversionevent',
            name='conversions_event_lease',
        ),
        migrations.AlterField(
            model_name='conversionevent',
            name='order_reference',
            field=models.CharField(blank=True, max_length=128, verbose_name='order'),
        ),
        migrations.AddIndex(
            model_name='conversionevent',
            index=models.Index(condition=models.Q(('status', 'sending')), fields=['status', 'lease_expires_at'], name='conversions_event_lease'),
        ),
        migrations.AddIndex(
            model_name='conversionevent',
            index=models.Index(fields=['order_reference'], name='conversions_event_order'),
        ),
    ]
