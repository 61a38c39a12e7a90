"""SQL Server connector: full, differential and log backups to .bak files, LSN chains, STOPAT restore.

Read in this order (the contract is ``spec/connectors-mssql.md``):

1. ``url.py`` — ``mssql://USER@HOST[:PORT][/DB,…]?driver=…&stage=PATH[&trusted=1][&copy_only=1]``.
   The password comes from ``SQLCMDPASSWORD`` or ``&password_file=PATH``, never the URL or argv.
2. ``server.py`` — pyodbc with autocommit, every result set drained, no query timeout, the
   server's messages as progress, errors with their numbers; sys.databases / msdb reads.
3. ``meta.py`` — what a snapshot records per database: the backupset fields of its file.
4. ``chain.py`` — snapshots as chain links, one stream per database, ``Lsn`` positions
   (importable without pyodbc: retention and ``restore-points`` work without the extra).
5. ``source.py`` — ``dtstore snapshot mssql://… --mode full|diff|log|auto`` (Ola Hallengren's rules).
6. ``plan.py`` — the restore plan (pure; dbatools' selection and LSN-chain test) and its T-SQL.
7. ``restore.py`` — executing it: fetch the files into the stage folder, RESTORE … STOPAT.
8. ``connector.py`` — the object the registry loads.

This file imports nothing.  Tested against the TDS simulator in ``tests/sim/mssql`` through real
pyodbc + unixODBC + FreeTDS, never against a real SQL Server: the tests show agreement with the
documentation as we read it, not with the product.
"""
