"""Artifact storage: content-addressed safetensors payloads."""
