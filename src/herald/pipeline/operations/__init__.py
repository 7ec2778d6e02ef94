"""What keeps the pipeline whole besides its stages: replaying dead letters (an operator's
tool, from the API and ``herald dlq``), the recovery sweep that re-publishes what a bus lost,
and housekeeping on a timer."""
