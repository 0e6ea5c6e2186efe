"""``python -m dlc.cli``: the same as the ``dlc`` command (and ``python -m dlc``)."""

import sys

from . import main

sys.exit(main())
