"""The worker: claims queued updates and applies them."""
