"""API keys: bearer tokens with a scope, checked by typed dependencies (app/auth/deps.py).

Scopes nest: ``predict`` (inference and reads) < ``train`` (teach, cancel) < ``admin``
(promote, rollback, delete, keys). Keys are high-entropy random strings, so a fast SHA-256
of the key is a safe thing to store and look up on every request (no slow password hash
on the serving path). The first start with no key creates an admin key (app/auth/keys.py).
"""
