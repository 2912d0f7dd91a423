"""`python -m structome.jobs.cli ...`, the same as `structome ...`."""

from structome.jobs.cli import main

main()
