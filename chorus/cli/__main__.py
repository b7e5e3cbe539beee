"""`python -m chorus.cli`: the same as the `chorus` command."""

from chorus.cli import app

app()
