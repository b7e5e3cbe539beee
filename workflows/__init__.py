"""Pure logic: no Celery, no database, no network. Everything here is table-tested."""
