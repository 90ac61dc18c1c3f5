"""The model registry: models, their versions, the accuracy matrix and the serving alias."""
