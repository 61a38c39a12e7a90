"""Oracle connector: user-managed hot backup of data files, control file, PFILE and archived logs;
log-only increments; point-in-time restore with SQL*Plus ``RECOVER … UNTIL``.

Read in this order (the contract is ``spec/connectors-oracle.md``):

1. ``url.py`` — ``oracle://USER@HOST:PORT/SERVICE?files=local|sftp://osuser@dbhost[:port]&stage=PATH
   &driver=MODULE``; the password from ``ORACLE_PWD`` or ``password_file=``, never the URL or argv.
2. ``session.py`` — SQL through python-oracledb (or any module with its ``connect``), as SYSDBA or
   SYSBACKUP; ORA- errors become ConnectorError; the command runner that reaches the host's files.
3. ``meta.py`` — the metadata of a full (``mode: full``) and of a log snapshot (``mode: log``).
4. ``chain.py`` — snapshots as chain links: one stream per incarnation, all threads in one composite
   position (:class:`Frontier`), so a window is restorable only where every thread's logs are.
5. ``source.py`` — ``dtstore snapshot oracle://…``: the hot backup, and the new archived logs.
6. ``plan.py`` — the restore plan (pure): the full, the logs, the remapped paths, the SQL*Plus script.
7. ``restore.py`` — executing it: lay the files down (locally or over SFTP), run SQL*Plus on the host.
8. ``connector.py`` — the object the registry loads.

The only third-party dependency is the driver (``pip install "dtstore[oracle]"``: python-oracledb).
"""
