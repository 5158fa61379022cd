"""`python -m vidzoo.cli`, the same as the `vidzoo` command."""

from vidzoo.cli import main

main()
