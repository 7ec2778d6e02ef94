"""Retry policy, backoff and (later) circuit breakers and token buckets."""
