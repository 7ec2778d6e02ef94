"""The pipeline: its stages (``stages/``), the machinery they share (the unit of work, the
consumer runner, group commit, planning, failover, retries, dead letters) and the operations
that keep it whole (``operations/``)."""
