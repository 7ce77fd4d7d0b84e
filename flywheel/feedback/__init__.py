"""Stage: users' feedback. The durable writer, the consensus of annotators (Dawid-Skene)
and their agreement, and the human review queue."""
