"""``python -m tl_multineuron.cli`` (as ``python -m tl_multineuron``): the command line."""

import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
