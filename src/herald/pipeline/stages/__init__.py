"""The stages a notification passes through, in order: intake (the API's transaction), relay
(outbox → bus), route (a notification → its delivery jobs), deliver (a channel's jobs → its
providers) and status (deliveries → the notification's status). Each handles a batch in one
unit of work (``pipeline/unit.py``) under the consumer runner (``pipeline/runner.py``)."""
