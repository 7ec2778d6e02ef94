"""The pipeline stages: intake, outbox relay, router, channel workers, status, housekeeping."""
