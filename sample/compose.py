"""The same as `dlc compose ...`: python sample/compose.py --help."""

import sys

from dlc.cli import main

raise SystemExit(main(["compose", *sys.argv[1:]]))
