"""The steps of one cycle, each safe to run again: consensus -> select -> train -> finish.

Every step takes ids, re-reads the cycle (its learning settings are the ``params`` fixed
when it was queued), records its output under the cycle, and returns that output at once
when it finds it already there (DESIGN.md, habit 4): a worker may die mid-step and the
broker then hands the step to another worker."""
