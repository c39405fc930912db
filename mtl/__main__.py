"""`python -m mtl`: the same as the `mtl` command."""

from mtl.cli import main

main()
