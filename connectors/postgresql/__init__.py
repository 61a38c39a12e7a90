"""PostgreSQL connector: file-level base backups, WAL archiving with ``dtstore wal-push``, point-in-time restore.

Read in this order (the contract is ``spec/connectors-postgresql.md``):

1. ``url.py`` — ``postgresql://USER@HOST[:PORT]/[DB]?host=SOCKET_DIR`` (libpq conventions, PGPASSWORD /
   PGPASSFILE, nothing secret in argv) and the restore target ``postgresql:///?pgdata=DIR&…``.
2. ``server.py`` — facts read with ``psql`` (system identifier, version, data directory, timeline,
   segment size, tablespaces) and the low-level backup session (``pg_backup_start``/``stop``).
3. ``meta.py`` — the metadata of a base backup (``mode: full``) and of a WAL batch (``mode: wal``).
4. ``chain.py`` — snapshots as chain links, one stream per timeline, WAL segments as positions.
5. ``source.py`` — ``dtstore snapshot postgresql://…``: the base backup, file by file.
6. ``wal.py`` — a WAL batch as a Source, and the index that makes ``wal-push`` idempotent.
7. ``pushd.py`` — ``dtstore wal-push``: the client and the persistent pusher behind a unix socket.
8. ``plan.py`` — the restore plan (pure), on the framework's generic planner.
9. ``restore.py`` — executing it: lay down the base, prefetch the WAL, write the recovery settings.
10. ``connector.py`` — the object the registry loads.

No third-party dependency: the connector runs PostgreSQL's own ``psql`` and ``pg_ctl``.
"""
