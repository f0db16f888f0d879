"""``python -m lib``: the command line (``lib.cli``)."""

import sys

from lib.cli import main

if __name__ == "__main__":
    sys.exit(main())
