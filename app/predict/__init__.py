"""Serving: POST /predict and the Open Inference Protocol v2 (router.py, service.py, oip.py), the serving
versions known without a query per request (served_versions.py), single-flight learner loads (cache.py) and
dynamic batching of concurrent requests into one forward (batching.py)."""
