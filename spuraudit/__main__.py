"""`python -m spuraudit ...` (and `torchrun ... -m spuraudit extract ...`): the command line."""

import sys

from .cli import main

sys.exit(main())
