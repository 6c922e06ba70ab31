"""The embedded default: PostgreSQL, pulsar-lite and the platform's processes under supervisord."""
