"""The streaming job: Pulsar -> validation -> Delta tables and PostgreSQL aggregates."""
