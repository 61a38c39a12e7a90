"""``driver=tests.sim.oracle.faulty_log``: see ``faults.py``."""

from tests.sim.oracle.driver import AUTH_MODE_SYSBACKUP, AUTH_MODE_SYSDBA, DatabaseError, Error
from tests.sim.oracle.faults import make_connect

connect = make_connect("log")

__all__ = ["AUTH_MODE_SYSBACKUP", "AUTH_MODE_SYSDBA", "DatabaseError", "Error", "connect"]
