"""`python -m regwarden` runs the CLI."""

from .cli import main

main()
