"""Thin Celery tasks: load by id, call the provider, run a pure workflow function, save."""
