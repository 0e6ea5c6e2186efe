"""The same as `dlc sample ...`: python sample/sample.py --help."""

import sys

from dlc.cli import main

raise SystemExit(main(["sample", *sys.argv[1:]]))
