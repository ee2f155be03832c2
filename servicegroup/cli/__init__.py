"""The ``servicegroup`` operator CLI, built on cliff.

- :mod:`.app` -- the application and :func:`main` (the console script);
- :mod:`.common` -- backend options, ServiceGroup construction, one-line errors;
- :mod:`.output` -- the columns and table of services;
- :mod:`.services` -- service-list, service-delete, force-down, enable, disable;
- :mod:`.members` -- join, watch;  :mod:`.db` -- db-sync;
- :mod:`.demo`, :mod:`.bench` -- the demo and the quick is_up benchmark.

A new command is one class and one entry point in the ``servicegroup.cli``
group of ``setup.cfg``.
"""

from servicegroup.cli.app import main
from servicegroup.cli.common import EXIT_ERROR

__all__ = ["EXIT_ERROR", "main"]
