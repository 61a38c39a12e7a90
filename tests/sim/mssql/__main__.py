"""``python -m tests.sim.mssql --port PORT --state DIR --password-env VAR``: run the simulator.

Prints ``ready`` on stdout once it listens on 127.0.0.1:PORT (PORT 0: a free port, printed as
``ready PORT``).  The ``sa`` password is read from the environment variable VAR, never from argv.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from tests.sim.mssql.engine import Engine
from tests.sim.mssql.server import SimServer


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.sim.mssql", description=__doc__)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--state", type=Path, required=True, help="folder for the catalog and database files")
    p.add_argument("--password-env", required=True, metavar="VAR", help="environment variable with the sa password")
    p.add_argument("--user", default="sa")
    p.add_argument("--name", default="SIMSQL", help="@@SERVERNAME")
    p.add_argument("--timezone", default="Europe/Berlin", help="the server's local time zone (STOPAT, msdb dates)")
    p.add_argument("--step-delay", type=float, default=0.01,
                   help="seconds a BACKUP waits between progress messages (where a client's cancel is noticed)")
    args = p.parse_args(argv)
    password = os.environ.get(args.password_env)
    if not password:
        p.error(f"the environment variable {args.password_env} is not set")
    args.state.mkdir(parents=True, exist_ok=True)
    engine = Engine(args.state, password=password, user=args.user, name=args.name, zone=args.timezone,
                    step_delay=args.step_delay)
    server = SimServer(args.port, engine)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    port = server.server_address[1]
    print(f"ready {port}" if args.port == 0 else "ready", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
