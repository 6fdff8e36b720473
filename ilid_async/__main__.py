"""`python -m ilid_async`: the command line (cli.main)."""

import sys

from ilid_async.cli import main

__all__: list[str] = []  # run, not imported

# Guarded: spawned worker processes import the main module again and must not rerun the CLI.
if __name__ == "__main__":
    sys.exit(main())
