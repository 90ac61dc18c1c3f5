"""Prometheus metrics at GET /metrics: HTTP and prediction figures of this process
(registry.py, http.py, predict.py) and queue, update and learning figures read from the
database at scrape time (database.py), so worker processes need no metrics port of their own."""
