"""A simulated Exchange server on disk, for the Exchange connector's tests (no Exchange runs on Linux).

``store.py`` lays out the files of a server of either era (2003: ``MDBDATA/priv1.edb`` + ``.stm``, one
storage group, 5-hex-digit log names, 5 MiB logs; 2016: one folder per database, 8-hex-digit names, 1 MiB
logs; sizes are parameters) with valid ESE headers and checksums, and a writer that changes the
databases, rolls ``E00.log`` into numbered generations and advances the checkpoint.  ``tools.py`` fakes
what the connector runs: PowerShell (``Get-MailboxDatabase -Status``), ``diskshadow`` (read from stdin:
writer verify, begin backup, add volume, create, expose, end backup = BackupComplete, which truncates
the generations below the checkpoint recorded at ``create``), ``wbadmin start systemstatebackup`` and
``eseutil`` (``/mh``, ``/ml``, ``/r``).

Command line::

    python -m tests.sim.exchange --root DIR init [--era 2003|2016] [--databases DB1,DB2] [--log-size N]
    python -m tests.sim.exchange --root DIR write --generations N
    python -m tests.sim.exchange --root DIR bin        # prints a folder to put first on PATH

What the fakes prove and what they do not is in ``spec/connectors-exchange.md`` §9.
"""
