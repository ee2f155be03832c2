"""Test infrastructure for servicegroup and for code that uses it.

Shipped with the library (as ``kazoo.testing`` is with kazoo) so that
applications built on servicegroup can test against the same real servers
and the same fault injection as its own suites:

- :mod:`servicegroup.testing.servers`: private ZooKeeper, memcached, etcd
  and Redis servers on free loopback ports, and a database of its own per
  test session on the shared PostgreSQL and MariaDB;
- :mod:`servicegroup.testing.consul`: a model of the Consul HTTP API that
  follows Consul's documented semantics (Consul itself cannot be installed
  everywhere), and a wrapper for a real ``consul agent -dev``;
- :mod:`servicegroup.testing.proxy`: a TCP proxy that freezes, partitions,
  delays, resets or refuses the traffic between a client and its server
  (its forwarding engine: :mod:`servicegroup.testing.relay`);
- :mod:`servicegroup.testing.clock`: a fake monotonic clock;
- :mod:`servicegroup.testing.selection`: the ``backend(name)`` pytest
  marker and the ``--backend NAME`` option that selects by it.

Nothing in the library imports this package.
"""
