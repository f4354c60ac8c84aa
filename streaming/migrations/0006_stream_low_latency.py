from django.db import migrations, models

import streaming.models

HELP = "LL-HLS parts and LL-DASH chunks (about 1 s glass to glass); read at go-live."


class Migration(migrations.Migration):
    dependencies = [
        ("streaming", "0005_stream_worker_lease"),
    ]

    # Streams that exist already were encoded in standard mode: they get False; new ones
    # the setting's default, read when each is created (a callable, not frozen here).
    operations = [
        migrations.AddField(
            model_name="stream",
            name="low_latency",
            field=models.BooleanField(default=False, help_text=HELP),
        ),
        migrations.AlterField(
            model_name="stream",
            name="low_latency",
            field=models.BooleanField(default=streaming.models.low_latency_default, help_text=HELP),
        ),
    ]
