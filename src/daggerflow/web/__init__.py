"""REST API (Dagger's routes plus a versioned API) served by the worker."""
