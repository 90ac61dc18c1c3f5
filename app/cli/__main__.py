"""`python -m app.cli ...` is `retain ...` (the tests and LocalServer start it this way)."""

import sys

from app.cli.entrypoint import main

sys.exit(main())
