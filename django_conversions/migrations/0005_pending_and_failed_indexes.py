# Storage: the due index holds pending events only (a delivered event costs it nothing), and
# failed events per site get a small index of their own for the admin's counts and health.

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('django_conversions', '0004_storage'),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name='conversionevent',
            name='conversions_event_due',
        ),
        migrations.AddIndex(
            model_name='conversionevent',
            index=models.Index(condition=models.Q(('status', 'pending')), fields=['site', 'next_attempt_at', 'id'], name='conversions_event_due'),
        ),
        migrations.AddIndex(
            model_name='conversionevent',
            index=models.Index(condition=models.Q(('status', 'failed')), fields=['site', 'created_at'], name='conversions_event_failed'),
        ),
    ]
