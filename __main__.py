"""`python -m structome ...`: the same command line as the `structome` script."""

from structome.jobs.cli import main

main()
