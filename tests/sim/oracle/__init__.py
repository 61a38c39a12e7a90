"""A simulated Oracle database whose state is its own file tree (tests only).

``ORACLE_SIM_STATE`` (or ``--state DIR``) names the tree::

    DIR/dbs/initORCL.ora  spfileORCL.ora  orapwORCL      PFILE, SPFILE (same text form), password hash
    DIR/oradata/ORCL/control01.ctl control02.ctl         control files (JSON)
    DIR/oradata/ORCL/system01.dbf sysaux01.dbf undotbs01.dbf users01.dbf
                                                         data files: 8 KiB blocks, block 0 the header
                                                         (file#, checkpoint SCN, backup-mode SCN), then the
                                                         dictionary (system) or the rows with their SCNs (users)
    DIR/oradata/ORCL/redo01.log redo02.log redo03.log    online logs (JSON lines: header, then changes)
    DIR/arch/1_<seq>_<resetlogs_id>.arc                  archived logs: header (thread, sequence, first/next
                                                         change#, first/next time), then the changes
    DIR/.sim/instance.json                               the running instance (OPEN or MOUNTED); absent: down

Modules: ``db`` (the engine: files, SCN clock, log switches, backup mode, recovery), ``sql`` (the
statements it understands), ``driver`` (a DB-API stand-in with python-oracledb's ``connect``),
``sqlplus`` (a fake SQL*Plus for restore scripts), ``__main__`` (the command line).

What it proves and what it cannot: see ``spec/connectors-oracle.md`` §9.
"""
