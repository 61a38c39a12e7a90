"""Notifications (spec/agent.md §6): a generic webhook, email over SMTP, Healthchecks-style pings.

:class:`Notifier` takes every event of a run (``failure``, ``success``, ``skipped``, ``rpo``,
``recovered``, ``drill``) and gives it to the job's targets:

* webhook and email only for the events the target's ``on`` wants (:attr:`Event.topics`: the event's
  type; a drill's result also goes to ``drill``, a failed drill also to ``failure``);
* Healthchecks pings whatever ``on`` says, since a ping that stops is how a dead agent is noticed:
  ``URL/start`` when a run starts (:meth:`Notifier.start`), ``URL`` on ``success``, ``URL/fail``
  (the message in a POST body) on ``failure`` and on a failed ``drill``.

A failing target never raises: it is retried (webhook and pings: 3 tries, 1 s then 4 s apart), then
reported as a ``notify_failed`` record, which the Notifier hands to its ``log`` callable (the run
log) and returns.  The SMTP password is read when a mail is sent and is never part of a record,
message or exception; webhook and ping URLs appear in errors as ``scheme://host[:port]/***``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import json
import os
import smtplib
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any, Protocol

from dtstore import __version__
from dtstore.agent.state import iso

EVENT_TYPES = frozenset({"failure", "success", "skipped", "rpo", "recovered", "drill"})
DEFAULT_ON = frozenset({"failure", "rpo", "skipped"})
RETRY_DELAYS: tuple[float, ...] = (1.0, 4.0)
"""seconds before the 2nd and the 3rd try"""
HTTP_TIMEOUT = 10.0
SMTP_TIMEOUT = 30.0
_FAIL_BODY_LIMIT = 10_000


class NotifyError(Exception):
    """One delivery failed; the message is safe to record (no passwords, URLs masked)."""


class NotifyTarget(Protocol):
    """The fields of ``agent.config.Notify`` this module reads."""

    @property
    def name(self) -> str: ...
    @property
    def webhook(self) -> str | None: ...
    @property
    def email(self) -> tuple[str, ...]: ...
    @property
    def smtp(self) -> str | None: ...
    @property
    def smtp_user(self) -> str | None: ...
    @property
    def smtp_password_file(self) -> str | None: ...
    @property
    def smtp_password_env(self) -> str | None: ...
    @property
    def sender(self) -> str | None: ...
    @property
    def healthchecks(self) -> str | None: ...
    @property
    def on(self) -> frozenset[str]: ...


@dataclass(frozen=True)
class Event:
    """What a notification says: ``type`` is one of :data:`EVENT_TYPES`; ``run`` the run record, if any."""

    type: str
    job: str
    time: dt.datetime
    message: str
    host: str = field(default_factory=socket.gethostname)
    run: Mapping[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type, "job": self.job, "host": self.host, "time": iso(self.time),
                "message": self.message, "run": dict(self.run) if self.run is not None else None}

    @property
    def topics(self) -> frozenset[str]:
        """The ``on`` values that want this event: its type; a drill's result also goes to ``drill``, a
        failed drill also to ``failure``."""
        if self.type == "drill":
            return frozenset({"drill"} | ({"failure"} if self.failed else set()))
        if self.type == "success" and self.run is not None and self.run.get("kind") == "drill":
            return frozenset({"success", "drill"})
        return frozenset({self.type})

    @property
    def failed(self) -> bool:
        """Whether a Healthchecks ``/fail`` ping belongs to this event."""
        if self.type == "failure":
            return True
        if self.type == "drill":
            return not (self.run is not None and self.run.get("result") == "ok")
        return False


def event_for_run(record: Mapping[str, Any], *, now: dt.datetime, host: str | None = None) -> Event:
    """The event a finished run record calls for: ``success`` (ok, partial), ``skipped``, ``drill`` (a
    failed drill), or ``failure``."""
    job = str(record.get("job", "?"))
    result = str(record.get("result", "failed"))
    kind = record.get("kind", "backup")
    mode = record.get("mode") or record.get("requested_mode") or kind
    error = record.get("error")
    if result in ("ok", "partial"):
        kind_text = "drill" if kind == "drill" else f"{mode} backup"
        extra = " (some files could not be read)" if result == "partial" else ""
        etype, message = "success", f"{job}: {kind_text} succeeded{extra}"
    elif result == "skipped":
        etype, message = "skipped", f"{job}: {mode} run skipped: {error or 'the previous run is still going'}"
    else:
        etype = "drill" if kind == "drill" else "failure"
        what = "drill" if kind == "drill" else f"{mode} backup"
        message = f"{job}: {what} {result}" + (f": {error}" if error else "")
    return Event(type=etype, job=job, time=now, message=message, host=host or socket.gethostname(),
                 run=dict(record))


def mask_url(url: str) -> str:
    """The URL with its password and query string replaced by ``***`` (for records and messages)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "***"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{host}" if ":" in userinfo else f"{user}@{host}"
    query = "***" if parts.query else ""
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def endpoint(url: str) -> str:
    """``scheme://host[:port]/***``: how a webhook or ping URL appears in errors and records.  Their
    paths often are the secret (Slack-style hook paths, Healthchecks UUIDs): only the host is shown."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "***"
    if ":" in host:
        host = f"[{host}]"
    hidden = "/***" if parts.path.strip("/") or parts.query else ""
    return f"{parts.scheme}://{host}{port}{hidden}"


# --- HTTP -----------------------------------------------------------------------------------------------------

def _retrying(what: str, attempt: Callable[[], None], *, delays: Sequence[float],
              sleep: Callable[[float], None]) -> None:
    """``attempt`` up to ``1 + len(delays)`` times; the last error, as a NotifyError."""
    last: NotifyError | None = None
    for n in range(len(delays) + 1):
        if n:
            sleep(delays[n - 1])
        try:
            attempt()
            return
        except NotifyError as exc:
            last = exc
    tries = len(delays) + 1
    raise NotifyError(f"{what}: {last} (after {tries} {'try' if tries == 1 else 'tries'})")


def _http(url: str, *, data: bytes | None, content_type: str | None, timeout: float) -> None:
    """One request (POST when ``data``); a non-2xx answer or a network error raises NotifyError."""
    headers = {"User-Agent": f"dtstore/{__version__}"}
    if content_type:
        headers["Content-Type"] = content_type
    request = urllib.request.Request(url, data=data, headers=headers, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status = int(response.status)
            response.read(65536)
    except urllib.error.HTTPError as exc:
        exc.close()
        raise NotifyError(f"HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise NotifyError(f"{exc.reason}") from None
    except (OSError, ValueError, http.client.HTTPException) as exc:
        raise NotifyError(f"{type(exc).__name__}: {exc}") from None
    if not 200 <= status < 300:
        raise NotifyError(f"HTTP {status}")


def send_webhook(url: str, event: Event, *, timeout: float = HTTP_TIMEOUT,
                 delays: Sequence[float] = RETRY_DELAYS, sleep: Callable[[float], None] = time.sleep) -> None:
    """POST the event as JSON; 3 tries.  Raises NotifyError when every try failed."""
    body = json.dumps(event.to_json(), default=str).encode()
    _retrying(f"webhook {endpoint(url)}",
              lambda: _http(url, data=body, content_type="application/json", timeout=timeout),
              delays=delays, sleep=sleep)


def ping_url(url: str, kind: str) -> str:
    """Healthchecks URLs: ``start`` → URL/start, ``success`` → URL, ``fail`` → URL/fail (query kept)."""
    if kind == "success":
        return url
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/" + kind))


def send_ping(url: str, kind: str, *, body: str | None = None, timeout: float = HTTP_TIMEOUT,
              delays: Sequence[float] = RETRY_DELAYS, sleep: Callable[[float], None] = time.sleep) -> None:
    """One Healthchecks-style ping (``start``, ``success`` or ``fail``); a body makes it a POST."""
    if kind not in ("start", "success", "fail"):
        raise ValueError(f"unknown ping {kind!r}")
    target = ping_url(url, kind)
    data = body.encode("utf-8", "replace")[:_FAIL_BODY_LIMIT] if body is not None else None
    _retrying(f"healthchecks {kind} {endpoint(url)}",
              lambda: _http(target, data=data, content_type="text/plain; charset=utf-8" if data else None,
                            timeout=timeout),
              delays=delays, sleep=sleep)


# --- email ----------------------------------------------------------------------------------------------------

def smtp_password(target: NotifyTarget, *, environ: Mapping[str, str] | None = None) -> str | None:
    """The SMTP password from ``smtp_password_file`` (trailing newline dropped) or ``smtp_password_env``."""
    env = os.environ if environ is None else environ
    if target.smtp_password_file:
        try:
            return Path(target.smtp_password_file).read_text("utf-8").rstrip("\r\n")
        except OSError as exc:
            raise NotifyError(f"cannot read smtp_password_file {target.smtp_password_file}: "
                              f"{exc.strerror or type(exc).__name__}") from None
    if target.smtp_password_env:
        value = env.get(target.smtp_password_env)
        if value is None:
            raise NotifyError(f"smtp_password_env {target.smtp_password_env} is not set")
        return value
    return None


def _smtp_address(url: str) -> tuple[bool, str, int]:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise NotifyError(f"bad smtp URL {mask_url(url)}: use smtp://HOST[:PORT] or smtps://HOST[:PORT]")
    tls = parts.scheme == "smtps"
    try:
        port = parts.port or (465 if tls else 25)
    except ValueError:
        raise NotifyError(f"bad port in smtp URL {mask_url(url)}") from None
    return tls, parts.hostname, port


def format_email(event: Event, *, sender: str, recipients: Sequence[str]) -> EmailMessage:
    """Subject ``[dtstore] JOB: TYPE on HOST``; a plain-text body: the message, then the run record."""
    msg = EmailMessage()
    msg["Subject"] = f"[dtstore] {event.job}: {event.type} on {event.host}"
    msg["From"] = sender
    msg["To"] = ", ".join(recipients)
    msg["Date"] = formatdate(event.time.timestamp(), localtime=False)
    msg["Message-ID"] = make_msgid(domain=event.host or None)
    lines = [event.message, "", f"job:   {event.job}", f"event: {event.type}", f"host:  {event.host}",
             f"time:  {iso(event.time)}"]
    if event.run is not None:
        lines += ["", "run:"]
        lines += [f"  {key}: {'' if value is None else value}" for key, value in event.run.items()]
    msg.set_content("\n".join(lines) + "\n")
    return msg


def _login(client: smtplib.SMTP, user: str, password: str) -> None:
    """AUTH with one mechanism, PLAIN (else LOGIN, else whatever smtplib picks): a rejected password
    is final, and is not offered again under the next mechanism."""
    advertised = client.esmtp_features.get("auth", "").upper().split()
    mechanism = next((m for m in ("PLAIN", "LOGIN") if m in advertised), None)
    try:
        if mechanism is None:
            client.login(user, password)
            return
        client.user, client.password = user, password
        client.auth(mechanism, client.auth_plain if mechanism == "PLAIN" else client.auth_login)
    finally:
        client.password = ""


def send_email(target: NotifyTarget, event: Event, *, timeout: float = SMTP_TIMEOUT,
               ssl_context: ssl.SSLContext | None = None, environ: Mapping[str, str] | None = None) -> None:
    """Mail the event to ``target.email`` through ``target.smtp``: STARTTLS when the server offers it on
    ``smtp://``, TLS from the start on ``smtps://``, AUTH when ``smtp_user`` is set (refused without TLS)."""
    if not target.email:
        return
    if not target.smtp:
        raise NotifyError("email needs smtp = \"smtp://HOST[:PORT]\"")
    tls, host, port = _smtp_address(target.smtp)
    context = ssl_context or ssl.create_default_context()
    sender = target.sender or f"dtstore@{event.host or socket.gethostname()}"
    message = format_email(event, sender=sender, recipients=target.email)
    where = f"smtp {mask_url(target.smtp)}"
    try:
        client: smtplib.SMTP = (smtplib.SMTP_SSL(host, port, timeout=timeout, context=context) if tls
                                else smtplib.SMTP(host, port, timeout=timeout))
        try:
            client.ehlo()
            secure = tls
            if not tls and client.has_extn("starttls"):
                client.starttls(context=context)
                client.ehlo()
                secure = True
            if target.smtp_user:
                if not secure:
                    raise NotifyError(f"{where}: the server offers no STARTTLS; the password is not sent in the "
                                      "clear (use smtps://)")
                _login(client, target.smtp_user, smtp_password(target, environ=environ) or "")
            client.send_message(message, from_addr=sender, to_addrs=list(target.email))
        finally:
            try:
                client.quit()
            except (smtplib.SMTPException, OSError):
                client.close()
    except NotifyError:
        raise
    except smtplib.SMTPAuthenticationError as exc:
        raise NotifyError(f"{where}: authentication as {target.smtp_user} failed ({exc.smtp_code})") from None
    except smtplib.SMTPResponseException as exc:
        text = exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
        raise NotifyError(f"{where}: {exc.smtp_code} {text}") from None
    except smtplib.SMTPRecipientsRefused as exc:
        raise NotifyError(f"{where}: recipients refused: {', '.join(sorted(exc.recipients))}") from None
    except (smtplib.SMTPException, ssl.SSLError, OSError) as exc:
        raise NotifyError(f"{where}: {type(exc).__name__}: {exc}") from None


# --- the notifier ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Failure:
    """One target channel that could not be reached."""

    target: str
    channel: str
    """``webhook``, ``email`` or ``healthchecks``"""
    error: str

    def record(self, event_type: str, job: str, now: dt.datetime) -> dict[str, Any]:
        """The ``notify_failed`` run-log record."""
        return {"type": "notify_failed", "job": job, "target": self.target, "channel": self.channel,
                "event": event_type, "time": iso(now), "error": self.error}


class Notifier:
    """Delivers events to named targets.  ``targets`` is the config's ``notify`` table (name → Notify);
    ``log`` receives every ``notify_failed`` record (e.g. ``StateDir.append``); ``delays`` and ``sleep``
    set the retry pauses (tests pass zeros); ``ssl_context`` verifies SMTP servers (default: the system's)."""

    def __init__(self, targets: Mapping[str, NotifyTarget], *, log: Callable[[dict[str, Any]], None] | None = None,
                 delays: Sequence[float] = RETRY_DELAYS, sleep: Callable[[float], None] = time.sleep,
                 http_timeout: float = HTTP_TIMEOUT, smtp_timeout: float = SMTP_TIMEOUT,
                 ssl_context: ssl.SSLContext | None = None, environ: Mapping[str, str] | None = None) -> None:
        self.targets = targets
        self.log = log
        self.delays = tuple(delays)
        self.sleep = sleep
        self.http_timeout = http_timeout
        self.smtp_timeout = smtp_timeout
        self.ssl_context = ssl_context
        self.environ = environ

    def _selected(self, names: Iterable[str]) -> list[NotifyTarget]:
        return [self.targets[n] for n in dict.fromkeys(names) if n in self.targets]

    def _report(self, failures: list[Failure], event_type: str, job: str, now: dt.datetime) -> list[dict[str, Any]]:
        records = [f.record(event_type, job, now) for f in failures]
        if self.log is not None:
            for record in records:
                with contextlib.suppress(Exception):  # recording a failure never fails the caller
                    self.log(record)
        return records

    def send(self, event: Event, names: Iterable[str]) -> list[dict[str, Any]]:
        """Give ``event`` to each named target (unknown names are ignored: config check reports them).
        Returns the ``notify_failed`` records (empty when everything was delivered)."""
        failures: list[Failure] = []
        for target in self._selected(names):
            wanted = bool(event.topics & target.on)
            if wanted and target.webhook:
                try:
                    send_webhook(target.webhook, event, timeout=self.http_timeout, delays=self.delays,
                                 sleep=self.sleep)
                except NotifyError as exc:
                    failures.append(Failure(target.name, "webhook", str(exc)))
            if wanted and target.email:
                try:
                    send_email(target, event, timeout=self.smtp_timeout, ssl_context=self.ssl_context,
                               environ=self.environ)
                except NotifyError as exc:
                    failures.append(Failure(target.name, "email", str(exc)))
            if target.healthchecks and (event.type == "success" or event.failed):
                kind = "fail" if event.failed else "success"
                try:
                    send_ping(target.healthchecks, kind, body=event.message if kind == "fail" else None,
                              timeout=self.http_timeout, delays=self.delays, sleep=self.sleep)
                except NotifyError as exc:
                    failures.append(Failure(target.name, "healthchecks", str(exc)))
        return self._report(failures, event.type, event.job, event.time)

    def start(self, job: str, names: Iterable[str], *, now: dt.datetime) -> list[dict[str, Any]]:
        """The ``URL/start`` ping of every named target with ``healthchecks``, when a run starts."""
        failures: list[Failure] = []
        for target in self._selected(names):
            if target.healthchecks:
                try:
                    send_ping(target.healthchecks, "start", timeout=self.http_timeout, delays=self.delays,
                              sleep=self.sleep)
                except NotifyError as exc:
                    failures.append(Failure(target.name, "healthchecks", str(exc)))
        return self._report(failures, "start", job, now)
