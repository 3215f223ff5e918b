"""`python -m conslaw`: the command-line interface."""

from .cli import run

run()
