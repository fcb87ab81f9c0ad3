"""``python -m bayesmeta``: the same command as the ``bayesmeta`` console script."""

import sys

from bayesmeta.cli import main

if __name__ == "__main__":
    sys.exit(main())
