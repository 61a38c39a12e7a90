"""MySQL / MariaDB connector: streamed logical fulls, binary-log backups, point-in-time restore.

Read in this order, the package is what a DBA needs to know (the contract is ``spec/connectors-mysql.md``):

1. ``url.py`` — ``mysql://USER@HOST[:PORT]/[DB1,DB2]?socket=PATH&defaults_file=PATH&binlogs=auto|local|remote``.
   The password comes from ``MYSQL_PWD`` or the defaults file, never from the URL or argv.
2. ``server.py`` — the facts read with mysql-connector-python: version and flavor, ``server_id``,
   hostname, binary-log settings, time zone.  The source id is ``mysql:<server_uuid>`` on MySQL and
   ``mysql:<hostname>[:<port>]/<server_id>`` on MariaDB (which has no server uuid).
3. ``dump.py`` — a full is ONE ``mariadb-dump``/``mysqldump --single-transaction --master-data=2
   --gtid --routines --triggers --events --hex-blob --databases A B ...``, cut into one item per
   database (``mysql/<db>.sql``), views apart (``mysql/views/<db>.sql``).
4. ``binlog.py`` — closed binlog files read without a server (times, GTID state, rotation).
5. ``chain.py`` — what each snapshot records, read as chain links (importable without the extra).
6. ``source.py`` — ``dtstore snapshot mysql://… --mode full|log|auto``.
7. ``plan.py`` — the restore plan (pure), built on the framework's generic planner.
8. ``restore.py`` — executing a plan: load the dumps, replay the binlogs with ``mariadb-binlog``.
9. ``connector.py`` — the object the registry loads.

This file imports nothing, so ``chain.py`` (retention, ``restore-points``) works without
mysql-connector-python installed.
"""
