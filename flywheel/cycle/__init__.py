"""Stage: the cycle. Its row and state, the four idempotent steps, what they keep in the
store, the one-at-a-time lock, queued requests and the outbox, the runner and triggers."""
