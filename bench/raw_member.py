"""A raw tooz member, the peer of ``servicegroup join`` in the benchmarks.

``python -m bench.raw_member URL GROUP MEMBER``: starts a coordinator with
tooz's own heart thread, joins GROUP and beats until killed. No healing, no
view: exactly what an application using tooz 9.1 directly would run.
"""

from __future__ import annotations

import sys
import threading

from tooz import coordination


def main(url: str, group: str, member: str) -> None:
    coord = coordination.get_coordinator(url, member.encode())
    coord.start(start_heart=True)
    try:
        coord.create_group(group.encode()).get()
    except coordination.GroupAlreadyExist:
        pass
    coord.join_group(group.encode()).get()
    if coord.requires_beating:
        coord.heartbeat()
    print("joined", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main(*sys.argv[1:4])
