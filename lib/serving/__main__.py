"""``python -m lib.serving``: the API as the image runs it (``lib.serving.server``)."""

import sys

from lib.serving.server import main

if __name__ == "__main__":
    sys.exit(main())
