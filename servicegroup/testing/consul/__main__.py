"""``python -m servicegroup.testing.consul run ... -- CMD``: see :mod:`.runner`."""

import sys

from servicegroup.testing.consul.runner import main

sys.exit(main())
