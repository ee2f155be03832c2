"""``make bench``: every benchmark, each printing its table and writing JSON.

- ``bench.isup``      - is_up from the cached view vs a backend read per call
- ``bench.ring``      - hash ring spread, keys moved, rebuild time vs tooz's ring
- ``bench.detection`` - SIGKILL -> is_up False, per backend, vs raw tooz
"""

from __future__ import annotations

import sys

from bench import detection, isup, ring


def main() -> int:
    for name, mod in (("isup", isup), ("ring", ring), ("detection", detection)):
        print(f"\n## bench.{name}\n", flush=True)
        rc = mod.main([])
        if rc:
            return rc
    return 0


if __name__ == "__main__":
    sys.exit(main())
