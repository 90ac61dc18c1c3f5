"""Tasks: a labelled dataset taught to a model as one update (POST /tasks and its reads)."""
