"""`python -m ecosystem_assets.serving` = `ecosystem-assets serve`."""

import sys

from ecosystem_assets.cli import main

sys.exit(main(["serve", *sys.argv[1:]]))
