"""HCL (Lotus) Domino connector: the data directory, NOTES.INI and every transaction-log extent;
log-only runs that send just the new extents; a backend for Domino 12+'s own backup task.

Read in this order (the contract is ``spec/connectors-domino.md``):

1. ``notesini.py`` — NOTES.INI: ``Directory``, ``TRANSLOG_Path``/``_Style``/``_Status``, ``DAOSBasePath``.
2. ``files.py`` — the NSF and TXN extent headers (replica ID, DBIID, ODS; LogID, sequence) and
   whether a server is running (``pid.nbf``).  The header layouts are the simulator's
   (``tests/sim/domino``): HCL does not document the on-disk formats.
3. ``url.py`` — ``domino:///local/notesdata[?ini=PATH&stage=PATH&snapshot=1&exclude=GLOB]``.
4. ``chain.py`` — snapshots as chain links; positions are (LogID, extent, offset) (importable
   without anything else, for retention and ``restore-points``).
5. ``source.py`` — direct mode: ``dtstore snapshot domino://… --mode full|log|auto``.
6. ``task.py`` — the Domino Backup task backend: the commands its configuration calls
   (``dtstore domino backup-snapshot|backup-db|backup-translog|restore-db|restore-translog|prune-…``).
7. ``plan.py`` — the restore plan (pure), built on the framework's generic planner.
8. ``restore.py`` — laying the files down, NOTES.INI kept aside.
9. ``connector.py`` — the object the registry loads.

No third-party dependency.  Nothing here was run against a real Domino server.
"""
