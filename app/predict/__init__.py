"""Serving: POST /predict, the Open Inference Protocol v2 endpoints and the learner cache."""
