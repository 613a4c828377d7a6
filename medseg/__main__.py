"""``python -m medseg`` runs the command line."""

import sys

from medseg.cli import main

if __name__ == "__main__":  # worker processes import this module again; they must not run the CLI
    sys.exit(main())
