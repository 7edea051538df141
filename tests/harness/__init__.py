"""Helpers that start real engines (corosync) for integration tests."""
