"""The same as `dlc text2img ...`: python sample/text2img.py --help."""

import sys

from dlc.cli import main

raise SystemExit(main(["text2img", *sys.argv[1:]]))
