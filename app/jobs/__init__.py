"""Jobs: the queue of updates, their state machine, and their API."""
