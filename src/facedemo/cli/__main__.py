"""`python -m facedemo.cli`: the `facedemo` command."""

import sys

from facedemo.cli import main

sys.exit(main())
