"""Notifications against real servers on 127.0.0.1: an aiosmtpd SMTP sink (STARTTLS, implicit TLS,
AUTH) and an http.server receiver for webhooks and Healthchecks pings (failing, recovering)."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import ipaddress
import json
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from dtstore import __version__
from dtstore.agent.config import Notify
from dtstore.agent.notify import (
    Event,
    Notifier,
    NotifyError,
    endpoint,
    event_for_run,
    mask_url,
    ping_url,
    send_email,
    send_ping,
    send_webhook,
)
from dtstore.agent.state import StateDir

aiosmtpd_controller = pytest.importorskip("aiosmtpd.controller")
aiosmtpd_smtp = pytest.importorskip("aiosmtpd.smtp")

NOW = dt.datetime(2026, 12, 2, 7, 0, tzinfo=dt.UTC)
PASSWORD = "s3cr3t-Pa55-word"
RUN = {"type": "run", "job": "shop", "kind": "backup", "requested_mode": "log", "mode": "log", "result": "failed",
       "exit_code": 1, "error": "mysqlbinlog exited with status 1", "host": "db1"}
NO_WAIT = (0.0, 0.0)


# --- servers ----------------------------------------------------------------------------------------------------

@dataclass
class Hit:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1 that records requests; ``codes`` maps a path to the answers it
    gives in turn (the last one repeats); anything else gets 200."""

    server: ThreadingHTTPServer
    hits: list[Hit] = field(default_factory=list)
    codes: dict[str, list[int]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def paths(self) -> list[tuple[str, str]]:
        return [(h.method, h.path) for h in self.hits]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        timeout = 10

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            with lock:
                rec.hits.append(Hit(self.command, self.path, dict(self.headers.items()), body))
                answers = rec.codes.get(self.path.split("?")[0], [200])
                code = answers.pop(0) if len(answers) > 1 else answers[0]
            self.send_response(code)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        do_GET = do_POST = _handle

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    rec = Receiver(server)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield rec
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@dataclass(frozen=True)
class Certs:
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert, self.key)
        return ctx

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert))


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A throw-away self-signed certificate for 127.0.0.1 / localhost."""
    folder = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "dtstore test")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(dt.datetime(2020, 1, 1, tzinfo=dt.UTC))
            .not_valid_after(dt.datetime(2099, 1, 1, tzinfo=dt.UTC))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                       serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    return Certs(folder / "cert.pem", folder / "key.pem")


@dataclass
class Sink:
    port: int
    messages: list[tuple[str, list[str], bytes]] = field(default_factory=list)
    logins: list[tuple[str, str]] = field(default_factory=list)
    tls_seen: list[bool] = field(default_factory=list)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def smtp_sink(certs: Certs, request: pytest.FixtureRequest) -> Iterator[Sink]:
    """aiosmtpd on 127.0.0.1: ``starttls`` (default), ``implicit`` (smtps) or ``plain`` (no TLS at all)."""
    mode = getattr(request, "param", "starttls")
    sink = Sink(_free_port())

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            sink.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
            sink.tls_seen.append(session.ssl is not None)
            return "250 OK"

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> Any:
        login = auth_data.login.decode()
        password = auth_data.password.decode()
        sink.logins.append((login, password))
        # handled=False: aiosmtpd answers 535 itself on failure
        return aiosmtpd_smtp.AuthResult(success=(login, password) == ("dtstore", PASSWORD), handled=False)

    kwargs: dict[str, Any] = {"authenticator": authenticator, "auth_require_tls": True, "ready_timeout": 10}
    if mode == "starttls":
        kwargs.update(tls_context=certs.server_context(), require_starttls=True)
    elif mode == "implicit":  # aiosmtpd counts only STARTTLS as TLS for auth_require_tls
        kwargs.update(ssl_context=certs.server_context(), auth_require_tls=False)
    elif mode == "login-only":
        kwargs.update(tls_context=certs.server_context(), auth_exclude_mechanism=["PLAIN"])
    controller = aiosmtpd_controller.Controller(Handler(), hostname="127.0.0.1", port=sink.port, **kwargs)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()


def target(**kw: Any) -> Notify:
    base: dict[str, Any] = {"name": "ops", "on": frozenset({"failure", "rpo", "skipped"})}
    base.update(kw)
    return Notify(**base)


def failure_event() -> Event:
    return event_for_run(RUN, now=NOW, host="db1")


# --- events -----------------------------------------------------------------------------------------------------

def test_events_for_run_records() -> None:
    failed = failure_event()
    assert failed.type == "failure" and failed.failed and failed.topics == {"failure"}
    assert failed.message == "shop: log backup failed: mysqlbinlog exited with status 1"
    doc = failed.to_json()
    assert doc == {"type": "failure", "job": "shop", "host": "db1", "time": "2026-12-02T07:00:00Z",
                   "message": failed.message, "run": RUN}
    ok = event_for_run({**RUN, "result": "ok", "error": None}, now=NOW, host="db1")
    assert ok.type == "success" and not ok.failed and ok.topics == {"success"}
    partial = event_for_run({**RUN, "result": "partial", "error": None}, now=NOW)
    assert partial.type == "success" and "could not be read" in partial.message
    skipped = event_for_run({**RUN, "result": "skipped", "error": None}, now=NOW)
    assert skipped.type == "skipped" and skipped.topics == {"skipped"} and not skipped.failed
    drill_bad = event_for_run({**RUN, "kind": "drill", "job": "shop-drill", "result": "failed"}, now=NOW)
    assert drill_bad.type == "drill" and drill_bad.failed and drill_bad.topics == {"drill", "failure"}
    drill_ok = event_for_run({**RUN, "kind": "drill", "result": "ok"}, now=NOW)
    assert drill_ok.type == "success" and drill_ok.topics == {"success", "drill"}
    timeout = event_for_run({**RUN, "result": "timeout", "error": "stopped after 2h"}, now=NOW)
    assert timeout.type == "failure" and timeout.message == "shop: log backup timeout: stopped after 2h"


def test_urls_are_masked_and_ping_urls_built() -> None:
    assert endpoint("https://hooks.slack.com/services/T0/B0/XXXX") == "https://hooks.slack.com/***"
    assert endpoint("https://hc-ping.com/UUID") == "https://hc-ping.com/***"
    assert endpoint("http://[::1]:8080/") == "http://[::1]:8080"
    assert endpoint("https://u:pw@h.example/?k=v") == "https://h.example/***"
    assert mask_url("https://hooks.example.com/x?token=abc") == "https://hooks.example.com/x?***"
    assert mask_url("https://user:pw@hooks.example.com/x") == "https://user:***@hooks.example.com/x"
    assert mask_url("smtp://mail.example.com:587") == "smtp://mail.example.com:587"
    assert ping_url("https://hc-ping.com/UUID", "start") == "https://hc-ping.com/UUID/start"
    assert ping_url("https://hc-ping.com/UUID/", "fail") == "https://hc-ping.com/UUID/fail"
    assert ping_url("https://hc-ping.com/UUID?rid=1", "fail") == "https://hc-ping.com/UUID/fail?rid=1"
    assert ping_url("https://hc-ping.com/UUID", "success") == "https://hc-ping.com/UUID"


# --- webhook ------------------------------------------------------------------------------------------------

def test_webhook_posts_the_event_as_json(receiver: Receiver) -> None:
    send_webhook(receiver.url + "/hook", failure_event(), delays=NO_WAIT)
    (hit,) = receiver.hits
    assert (hit.method, hit.path) == ("POST", "/hook")
    assert hit.headers["Content-Type"] == "application/json"
    assert hit.headers["User-Agent"] == f"dtstore/{__version__}"
    assert json.loads(hit.body) == failure_event().to_json()


def test_webhook_retries_twice_then_succeeds(receiver: Receiver) -> None:
    receiver.codes["/flaky"] = [500, 502, 204]
    pauses: list[float] = []
    send_webhook(receiver.url + "/flaky", failure_event(), delays=(1.0, 4.0), sleep=pauses.append)
    assert receiver.paths() == [("POST", "/flaky")] * 3
    assert pauses == [1.0, 4.0]  # the spec's backoff, without waiting for it


def test_webhook_that_always_fails_raises_notify_error(receiver: Receiver) -> None:
    receiver.codes["/down"] = [503]
    with pytest.raises(NotifyError, match=r"^webhook http://127\.0\.0\.1:\d+/\*\*\*: HTTP 503 .*3 tries\)$"):
        send_webhook(receiver.url + "/down?token=secret", failure_event(), delays=NO_WAIT)
    assert len(receiver.hits) == 3


def test_webhook_unreachable_fails_quickly() -> None:
    port = _free_port()  # nothing listens there
    with pytest.raises(NotifyError, match="refused"):
        send_webhook(f"http://127.0.0.1:{port}/", failure_event(), delays=NO_WAIT, timeout=5)


# --- Healthchecks -----------------------------------------------------------------------------------------------

def test_pings_start_success_fail(receiver: Receiver) -> None:
    url = receiver.url + "/ping/UUID"
    notifier = Notifier({"hc": target(name="hc", healthchecks=url, on=frozenset())}, delays=NO_WAIT)
    assert notifier.start("shop", ["hc"], now=NOW) == []
    assert notifier.send(event_for_run({**RUN, "result": "ok"}, now=NOW), ["hc"]) == []
    assert notifier.send(failure_event(), ["hc"]) == []
    assert notifier.send(event_for_run({**RUN, "result": "skipped"}, now=NOW), ["hc"]) == []  # no ping
    assert receiver.paths() == [("GET", "/ping/UUID/start"), ("GET", "/ping/UUID"), ("POST", "/ping/UUID/fail")]
    assert receiver.hits[2].body.decode() == failure_event().message


def test_ping_retries(receiver: Receiver) -> None:
    receiver.codes["/p/start"] = [500, 200]
    send_ping(receiver.url + "/p", "start", delays=NO_WAIT)
    assert receiver.paths() == [("GET", "/p/start")] * 2


# --- email ------------------------------------------------------------------------------------------------------

def _parse(raw: bytes) -> email.message.EmailMessage:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, email.message.EmailMessage)
    return msg


def test_email_over_starttls_with_auth_from_a_password_file(smtp_sink: Sink, certs: Certs, tmp_path: Path) -> None:
    secret = tmp_path / "smtp-password"
    secret.write_text(PASSWORD + "\n")
    ops = target(email=("dba@example.com", "oncall@example.com"), smtp=f"smtp://127.0.0.1:{smtp_sink.port}",
                 smtp_user="dtstore", smtp_password_file=str(secret), sender="dtstore@db1")
    send_email(ops, failure_event(), ssl_context=certs.client_context(), timeout=10)
    assert smtp_sink.logins == [("dtstore", PASSWORD)]
    ((mail_from, rcpt, raw),) = smtp_sink.messages
    assert smtp_sink.tls_seen == [True]
    assert mail_from == "dtstore@db1" and rcpt == ["dba@example.com", "oncall@example.com"]
    msg = _parse(raw)
    assert msg["Subject"] == "[dtstore] shop: failure on db1"
    assert msg["From"] == "dtstore@db1" and msg["To"] == "dba@example.com, oncall@example.com"
    body = msg.get_content().replace("\r\n", "\n")
    assert body.startswith("shop: log backup failed: mysqlbinlog exited with status 1\n")
    assert "  requested_mode: log" in body and "host:  db1" in body
    assert PASSWORD not in raw.decode()


@pytest.mark.parametrize("smtp_sink", ["implicit"], indirect=True)
def test_email_over_smtps_with_password_env(smtp_sink: Sink, certs: Certs) -> None:
    ops = target(email=("dba@example.com",), smtp=f"smtps://127.0.0.1:{smtp_sink.port}", smtp_user="dtstore",
                 smtp_password_env="DTSTORE_TEST_SMTP")
    send_email(ops, failure_event(), ssl_context=certs.client_context(), environ={"DTSTORE_TEST_SMTP": PASSWORD},
               timeout=10)
    assert smtp_sink.logins == [("dtstore", PASSWORD)]  # (session.ssl is set only by STARTTLS)
    assert smtp_sink.messages[0][0] == f"dtstore@{failure_event().host}"  # the default sender


@pytest.mark.parametrize("smtp_sink", ["starttls", "login-only"], indirect=True)
def test_email_wrong_password_is_reported_without_the_password(smtp_sink: Sink, certs: Certs) -> None:
    ops = target(email=("dba@example.com",), smtp=f"smtp://127.0.0.1:{smtp_sink.port}", smtp_user="dtstore",
                 smtp_password_env="PW")
    with pytest.raises(NotifyError) as info:
        send_email(ops, failure_event(), ssl_context=certs.client_context(), environ={"PW": "wrong-" + PASSWORD},
                   timeout=10)
    assert "authentication as dtstore failed (535)" in str(info.value)
    assert PASSWORD not in str(info.value) and info.value.__cause__ is None
    assert smtp_sink.messages == [] and len(smtp_sink.logins) == 1  # not offered again


@pytest.mark.parametrize("smtp_sink", ["login-only"], indirect=True)
def test_email_auth_login(smtp_sink: Sink, certs: Certs) -> None:
    ops = target(email=("dba@example.com",), smtp=f"smtp://127.0.0.1:{smtp_sink.port}", smtp_user="dtstore",
                 smtp_password_env="PW")
    send_email(ops, failure_event(), ssl_context=certs.client_context(), environ={"PW": PASSWORD}, timeout=10)
    assert smtp_sink.logins == [("dtstore", PASSWORD)] and len(smtp_sink.messages) == 1


def test_email_untrusted_certificate_fails(smtp_sink: Sink) -> None:
    ops = target(email=("dba@example.com",), smtp=f"smtp://127.0.0.1:{smtp_sink.port}")
    with pytest.raises(NotifyError, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        send_email(ops, failure_event(), timeout=10)  # the system's CAs do not know the throw-away one


@pytest.mark.parametrize("smtp_sink", ["plain"], indirect=True)
def test_email_without_tls_sends_no_password(smtp_sink: Sink) -> None:
    ops = target(email=("dba@example.com",), smtp=f"smtp://127.0.0.1:{smtp_sink.port}", smtp_user="dtstore",
                 smtp_password_env="PW")
    with pytest.raises(NotifyError, match="offers no STARTTLS; the password is not sent in the clear"):
        send_email(ops, failure_event(), environ={"PW": PASSWORD}, timeout=10)
    assert smtp_sink.logins == [] and smtp_sink.messages == []
    # without a user a plain relay is fine
    send_email(target(email=("dba@example.com",), smtp=f"smtp://127.0.0.1:{smtp_sink.port}"), failure_event(),
               timeout=10)
    assert smtp_sink.tls_seen == [False]


def test_missing_password_sources_are_reported(tmp_path: Path) -> None:
    ops = target(email=("a@b",), smtp="smtp://127.0.0.1:1", smtp_user="u", smtp_password_env="NOPE")
    from dtstore.agent.notify import smtp_password

    with pytest.raises(NotifyError, match="smtp_password_env NOPE is not set"):
        smtp_password(ops, environ={})
    ops = target(smtp_password_file=str(tmp_path / "missing"))
    with pytest.raises(NotifyError, match=r"cannot read smtp_password_file .*missing"):
        smtp_password(ops)


# --- the notifier -----------------------------------------------------------------------------------------------

def test_notifier_filters_by_on_and_every_channel(receiver: Receiver, smtp_sink: Sink, certs: Certs) -> None:
    smtp = f"smtp://127.0.0.1:{smtp_sink.port}"
    targets = {
        "ops": target(webhook=receiver.url + "/ops", email=("dba@example.com",), smtp=smtp,
                      healthchecks=receiver.url + "/hc"),
        "chat": target(name="chat", webhook=receiver.url + "/chat", on=frozenset({"success", "drill"})),
    }
    notifier = Notifier(targets, delays=NO_WAIT, ssl_context=certs.client_context(), smtp_timeout=10)
    assert notifier.send(failure_event(), ["ops", "chat", "unknown"]) == []
    assert receiver.paths() == [("POST", "/ops"), ("POST", "/hc/fail")]
    assert len(smtp_sink.messages) == 1
    receiver.hits.clear()
    assert notifier.send(event_for_run({**RUN, "result": "ok"}, now=NOW), ["ops", "chat"]) == []
    assert receiver.paths() == [("GET", "/hc"), ("POST", "/chat")]  # ops does not want success mails
    assert len(smtp_sink.messages) == 1
    receiver.hits.clear()
    drill = event_for_run({**RUN, "kind": "drill", "job": "shop-drill"}, now=NOW)
    assert notifier.send(drill, ["ops", "chat"]) == []
    assert receiver.paths() == [("POST", "/ops"), ("POST", "/hc/fail"), ("POST", "/chat")]
    assert len(smtp_sink.messages) == 2


def test_a_failing_target_never_raises_and_is_logged(receiver: Receiver, tmp_path: Path) -> None:
    receiver.codes["/down"] = [500]
    receiver.codes["/hc/fail"] = [500]
    state = StateDir(tmp_path)
    targets = {
        "broken": target(name="broken", webhook=receiver.url + "/down?key=" + PASSWORD,
                         email=("dba@example.com",), smtp=f"smtp://127.0.0.1:{_free_port()}",
                         smtp_user="dtstore", smtp_password_env="PW", healthchecks=receiver.url + "/hc"),
        "good": target(name="good", webhook=receiver.url + "/good"),
    }
    notifier = Notifier(targets, log=state.append, delays=NO_WAIT, environ={"PW": PASSWORD}, smtp_timeout=5)
    failed = notifier.send(failure_event(), ["broken", "good"])
    assert [(f["target"], f["channel"]) for f in failed] == [("broken", "webhook"), ("broken", "email"),
                                                              ("broken", "healthchecks")]
    assert all(f["type"] == "notify_failed" and f["event"] == "failure" and f["job"] == "shop"
               and f["time"] == "2026-12-02T07:00:00Z" for f in failed)
    assert ("POST", "/good") in receiver.paths()  # the other target was still tried
    assert receiver.paths().count(("POST", "/down?key=" + PASSWORD)) == 3
    logged = list(state.records(types=["notify_failed"]))
    assert len(logged) == 3
    text = state.run_log.read_text()
    assert PASSWORD not in text and PASSWORD not in json.dumps(failed) and "/down" not in text
    assert "refused" in failed[1]["error"]


def test_a_broken_log_does_not_break_the_notifier(receiver: Receiver) -> None:
    receiver.codes["/down"] = [500]

    def log(record: dict[str, Any]) -> None:
        raise OSError("disk full")

    notifier = Notifier({"x": target(name="x", webhook=receiver.url + "/down")}, log=log, delays=NO_WAIT)
    assert len(notifier.send(failure_event(), ["x"])) == 1
