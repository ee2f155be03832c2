"""Our own tooz backends, registered under the ``tooz.backends`` entry points.

tooz ships ZooKeeper, memcached, Redis and etcd drivers; these two add
what it lacks:

- :mod:`servicegroup.drivers.sql` - group membership, leader election and
  locks in SQL (schemes ``sql+sqlite``, ``sql+postgresql``, ``sql+mysql``);
  its database layer is :mod:`.sql_engine`, its tables :mod:`.sql_schema`,
  its locks :mod:`.sql_locks`;
- :mod:`servicegroup.drivers.consul` - group membership with liveness in
  Consul (schemes ``consul``, ``consul+https``): HTTP client
  :mod:`.consul_api`, key layout :mod:`.consul_kv`, locks
  :mod:`.consul_lock`, read-only catalog mode :mod:`.consul_catalog`.

:mod:`._base` is what both share. Nothing here imports the facade or the
records layer: tooz loads these modules on its own. Which URL a driver
name resolves to is :mod:`servicegroup.driver_urls`' job.
"""
