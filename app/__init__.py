"""Retain: a model service that keeps learning without forgetting (see docs/architecture.md)."""
