"""``python -m lowrank``: the command line of :mod:`lowrank.runner.cli`."""

import sys

from lowrank.runner.cli import main

sys.exit(main())
