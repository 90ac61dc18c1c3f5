"""`python -m workers`: a worker process that applies queued updates (the loop is app/updates/loop.py)."""
