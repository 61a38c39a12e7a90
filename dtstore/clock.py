"""The only reader of wall time, so retention, session expiry and PITR logic can be tested."""

from __future__ import annotations

import datetime as dt
import time


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def monotonic() -> float:
    return time.monotonic()
