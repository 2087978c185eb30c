"""`python -m gcpcolor`: the same command line as `gcpcolor`, where the script is not on PATH."""

from .cli import main

main()
