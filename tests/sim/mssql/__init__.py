"""A SQL Server simulator that speaks TDS 7.4 on 127.0.0.1, for the SQL Server connector's tests.

Start: ``python -m tests.sim.mssql --port PORT --state DIR --password-env VAR [--timezone ZONE]
[--step-delay S]``; it prints ``ready`` (``ready PORT`` for ``--port 0``).  Login ``sa`` with the
password from the environment variable VAR.  Clients: pyodbc + unixODBC + FreeTDS (Debian
``tdsodbc``) with ``TDS_Version=7.4;Encrypt=no`` (``encryption = off`` in freetds.conf): the
simulator answers PRELOGIN with ENCRYPT_NOT_SUP and has no TLS.

**Wire** (``tds.py``, ``server.py``): PRELOGIN, LOGIN7 (password unscrambled and checked: 18456 on
a wrong one), SQL batches (ALL_HEADERS skipped), transaction-manager requests (FreeTDS's
``autocommit=False``: begin/commit/rollback, so BACKUP then fails with 3021), ATTENTION.  Answers:
ENVCHANGE (database, language, packet size, collation), LOGINACK, COLMETADATA/ROW (bigint,
nvarchar(4000), numeric(38,0), datetime, uniqueidentifier, varbinary(8000), bit, float), INFO,
ERROR, DONE (MORE/COUNT/ERROR/ATTN).  RPC is answered with an error (the connector sends none).
A BACKUP's progress messages each end a result set and are flushed one by one with a short pause;
a client that sends ATTENTION (what FreeTDS does when a statement is closed before its results are
drained) or disconnects meanwhile **aborts the backup**: no file, no msdb row (pyodbc #471).

**SQL** (``engine.py``, ``sqlmap.py``), one statement at a time (``;`` and ``GO`` split batches):

* BACKUP DATABASE|LOG … TO DISK = N'…' WITH CHECKSUM, INIT, FORMAT, DIFFERENTIAL, COPY_ONLY,
  COMPRESSION (recorded only), STATS = n, NAME, DESCRIPTION; RESTORE HEADERONLY | FILELISTONLY |
  VERIFYONLY FROM DISK; RESTORE DATABASE|LOG … FROM DISK WITH NORECOVERY | RECOVERY, REPLACE,
  MOVE, STOPAT, STOPATMARK = 'lsn:N', CHECKSUM, STATS; RESTORE DATABASE … WITH RECOVERY;
* CREATE/DROP DATABASE, ALTER DATABASE … SET RECOVERY FULL|SIMPLE|BULK_LOGGED (SIMPLE ends the log
  chain), SET SINGLE_USER/MULTI_USER/OFFLINE/ONLINE; USE; SET (IMPLICIT_TRANSACTIONS tracked);
  BEGIN/COMMIT/ROLLBACK (counted, not undone);
* CREATE/DROP/ALTER TABLE, INSERT, UPDATE, DELETE, TRUNCATE TABLE, SELECT over one database's
  tables (sqlite underneath, one file per database), three-part names ``shop.dbo.t`` from any
  current database, ``[x]`` quoting, ``N'…'``, ``TOP (n)``; SELECT may join databases and the
  system views ``sys.databases``, ``sys.master_files``, ``sys.database_recovery_status``,
  ``msdb.dbo.backupset``, ``msdb.dbo.backupmediafamily``, ``msdb.dbo.restorehistory``, with
  ``@@SERVERNAME``, ``@@VERSION``, ``@@TRANCOUNT``, ``SERVERPROPERTY``, ``DB_ID``, ``DB_NAME``,
  ``DATEPART(TZOFFSET, SYSDATETIMEOFFSET())``, ``GETDATE()``, ``SYSUTCDATETIME()``.  Writes may not
  reference another database.  Type names are sqlite's business (no IDENTITY, no datetime type
  on user tables: such values come back as text).

**Model.** Each database has an LSN counter (decimal, msdb-shaped) and a log of committed writes
(LSN, UTC time, statement).  A full ``.bak`` holds the database file plus a header (HEADERONLY's
fields), a differential the writes since its base full's checkpoint, a log backup the writes from
``last_log_backup_lsn`` to its end; a trailer checksum (VERIFYONLY, damaged files: 3241).  msdb
and ``sys.master_files.differential_base_lsn/guid`` and ``last_log_backup_lsn`` move as SQL Server
documents (copy-only backups move nothing; SIMPLE keeps ``last_log_backup_lsn`` NULL).  RESTORE
keeps RESTORING/ONLINE states; a log restore replays the writes committed at or before STOPAT
(or up to the mark LSN), leaves the database RESTORING when STOPAT lies beyond the log (4322);
RECOVERY starts a new recovery fork (``recovery_fork_guid``, ``fork_point_lsn``).  Times are kept in
UTC and shown in the server's zone (``--timezone``, default Europe/Berlin): msdb dates, STOPAT,
``time_zone`` in 15-minute units.

**Errors** (number and text as the SQL Server documentation gives them, ``3013 <verb> is
terminating abnormally.`` after BACKUP/RESTORE failures): 4208 log backup under SIMPLE, 4214 no
current database backup, 3035 differential without a base, 3024 differential of master, 4212 log of
master, 3021 inside a transaction, 3201 cannot open backup device, 3147 tempdb, 911/927 missing or
restoring database, 3154 backup of another database, 3159 tail of the log not backed up, 3117 no
files ready to roll forward, 3136 differential on the wrong base, 4305 log too recent, 4326 log too
early, 4330 other recovery path, 1834 file in use, 5133 directory lookup failed, 3156 use MOVE, 3234
unknown logical file, 18456 login failed, 208/207/2714/2627 for the workload SQL.  Numbers we are
not sure of (see db-backup-mechanics.md §8) are marked there; 4319 and 50000/50001 are ours.

**What it proves, and what it cannot.**  The connector's code path is the real one: pyodbc calls,
FreeTDS's TDS encoding, result-set draining, cancel on close, autocommit, error-number parsing,
the exact T-SQL.  The simulator's answers are our reading of SQL Server's documentation (msdb
columns, LSN rules, STOPAT semantics, error numbers and texts), so a green test shows that the
connector agrees with that reading, **not with a real SQL Server**.  Not modelled: real page-level
backups and their sizes, concurrent transactions and LSNs inside a backup's span, BULK_LOGGED
restrictions, STOPAT inside a minimally logged range, availability groups, TDE, compression,
striped or appended media sets, permissions, Windows paths, DST-ambiguous STOPAT times, and
timing (a real BACKUP of a large database runs for minutes: the cancel window is modelled with
``--step-delay``).
"""
