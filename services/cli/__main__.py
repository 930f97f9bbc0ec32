"""`python -m services.cli`: the `carecoord` command."""

from services.cli.main import main

main()
