"""Many members in one process, for ``bench.scale`` (docs/scale.md).

``python -m bench.scale_member DRIVER URL RECORDS_URL TOPIC FIRST COUNT
INTERVAL DOWN``: one ServiceGroup joins hosts ``hFIRST`` .. to TOPIC, each
with its own heartbeat thread and backend client, as COUNT services of one
host each would. Prints ``ready`` once every join returned; then each line
read from stdin is answered with one JSON line (beats so far, the process's
CPU seconds, its pid); end of stdin stops the members (they leave).
"""

from __future__ import annotations

import json
import os
import sys
import time

from servicegroup import ServiceGroup


def main(argv: list[str]) -> int:
    driver, url, records_url, topic = argv[:4]
    first, count = int(argv[4]), int(argv[5])
    interval, down = float(argv[6]), float(argv[7])
    sg = ServiceGroup(
        driver, url or None, records_url, report_interval=interval, service_down_time=down, max_staleness=interval
    )
    try:
        for i in range(first, first + count):
            sg.join(f"h{i:05d}", topic)
        print("ready", flush=True)
        for _ in sys.stdin:
            beats = sum(m.beats for m in list(sg._members.values()))
            stats = {"beats": beats, "cpu": time.process_time(), "pid": os.getpid()}
            print(json.dumps(stats), flush=True)
    finally:
        sg.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
