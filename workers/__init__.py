"""`python -m workers`: a worker process that applies queued updates (see workers/__main__.py)."""
