"""``python -m servicegroup``: the same CLI as the ``servicegroup`` script."""

import sys

from servicegroup.cli import main

sys.exit(main())
