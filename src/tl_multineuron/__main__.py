"""``python -m tl_multineuron`` (and ``torchrun ... -m tl_multineuron``): the command line."""

import sys

from .cli import main

sys.exit(main())
