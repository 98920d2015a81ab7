# Partial indexes: the due index holds pending events only (a delivered event costs it
# nothing), failed events per site get a small index for the admin's counts and health, and the
# events still to be rebuilt from their committed order one for the sweep's refresh.

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
        migrations.AddIndex(
            model_name='conversionevent',
            index=models.Index(condition=models.Q(('rebuild_before_send', True)), fields=['source_content_type', 'source_object_id'], name='conversions_event_rebuild'),
        ),
    ]
