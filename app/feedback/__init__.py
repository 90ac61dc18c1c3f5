"""The feedback loop: predictions logged as they are served, labels that arrive later, live accuracy,
and the triggers that turn labels into updates by themselves (docs/feedback-loop.md)."""
