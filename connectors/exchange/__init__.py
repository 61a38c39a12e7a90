"""Exchange connector (2007 onwards through VSS; any version in file mode): every database with its
transaction logs, log-only runs that send just the new generations, logs truncated only after the
snapshot is committed.

Read in this order (the contract is ``spec/connectors-exchange.md``):

1. ``url.py`` — ``exchange://localhost/[DB,…][?stage=PATH&system-state=1&vss=full|copy]`` (on the server),
   ``exchange:///?edb=PATH&logs=DIR[&prefix=E00]`` (file mode), and the restore targets.
2. ``ese.py`` — the ESE headers read from the files: database (state, signatures, required generations,
   backup info), log (generation, signature, circular flag), checkpoint; both log name schemes.
3. ``server.py`` — discovery with ``Get-MailboxDatabase -Status`` (PowerShell), the ``diskshadow``
   session that stays open until ``committed()``, ``wbadmin start systemstatebackup``.
4. ``meta.py`` — the metadata, per database, as typed records.
5. ``chain.py`` — snapshots as chain links, one stream per database (importable without any tool).
6. ``source.py`` — ``dtstore snapshot exchange://… --mode full|log|auto``; BackupComplete only in
   ``committed()``.
7. ``plan.py`` — the restore plan (pure): files, generation checks, the eseutil commands.
8. ``restore.py`` — executing it: lay down, ``eseutil /r``, ``eseutil /mh`` must say Clean Shutdown.
9. ``connector.py`` — the object the registry loads.

This file imports nothing, so ``chain.py`` works for retention and ``restore-points`` everywhere.
"""
