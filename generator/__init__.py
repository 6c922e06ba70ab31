"""Event generator: realistic shopping sessions published to each tenant's Pulsar topic."""
