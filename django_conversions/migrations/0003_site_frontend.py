import django.core.validators
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("django_conversions", "0002_order_attribution")]

    operations = [
        migrations.AddField(
            model_name="trackingsite",
            name="feed_token",
            field=models.CharField(
                blank=True,
                help_text="A secret part of the product feed's URL; blank: the feed URL has none. Give the provider the feed URL shown below.",
                max_length=100,
                validators=[
                    django.core.validators.RegexValidator(
                        "^[A-Za-z0-9_-]+$",
                        "Letters, digits, '-' and '_' only, e.g. from secrets.token_urlsafe().",
                    )
                ],
                verbose_name="product feed token",
            ),
        ),
        migrations.AddField(
            model_name="trackingsite",
            name="script_url",
            field=models.URLField(
                blank=True,
                help_text="The provider's tracking script, loaded on the shop's pages (https).",
                max_length=500,
                verbose_name="front-end script URL",
            ),
        ),
        migrations.AddField(
            model_name="trackingsite",
            name="script_account_id",
            field=models.CharField(
                blank=True,
                help_text="Your account id at the provider, as its script expects it.",
                max_length=100,
                verbose_name="front-end account id",
            ),
        ),
        migrations.AddField(
            model_name="trackingsite",
            name="script_snippet",
            field=models.TextField(
                blank=True,
                help_text="JavaScript run on the shop's pages after the script, as the provider's instructions give it. $account_id and $order_id are replaced (as JSON values).",
                verbose_name="front-end snippet",
            ),
        ),
    ]
