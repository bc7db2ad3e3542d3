"""Grid'5000 support for the ``g5k`` provider: credentials, the API wrapper (typed errors,
retries, request counting), OAR resource expressions and the reservation plan.

Nothing here imports ``grid5000`` at module import time: the client is built lazily."""
