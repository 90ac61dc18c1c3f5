"""Importing a model someone already trained (POST /models, GET /architectures, ``retain import``)."""

IMPORT_STRATEGY = "import"  # the strategy an import's task carries: no training (app.updates.adopt)
