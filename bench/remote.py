"""Snapshot throughput to S3 (moto) and SFTP (OpenSSH sshd) on 127.0.0.1, against plain puts of the
same bytes to the same servers and against restic, in one run.

    python -m bench.remote [--size 256M] [--seed 1] [--workdir DIR] [--json OUT] [--keep]

Steps, for each target (S3, then SFTP), on a dump made by ``bench.gen_dump`` (cached in WORKDIR):

1. raw puts: the dump cut into 32 MiB objects, written with s3fs / sshfs ``pipe_file``, first one
   at a time, then with as many in parallel as dtstore uses for that backend (8 for S3, 4 for SFTP);
   the faster of the two is "raw", the reference;
2. ``dtstore snapshot`` of the dump (a CLI process; repository made with the default chunker and pack
   size, cheap key derivation, empty cache);
3. ``restic backup`` of the dump (repository version 2, default compression; empty cache).

Reported per step: input MB (10^6 bytes), stored MB (what the step added on the server, measured
there: object sizes / directory tree), wall seconds, MB/s of input, MB/s of stored bytes, and the
stored-bytes rate as a share of the raw put rate ("stored ÷ raw": how close the tool comes to the
link's capacity once its compression and deduplication savings are set aside; the issue's target is
70 %), plus the input rate as a share of raw ("input ÷ raw": > 100 % means backing up with the tool
is faster than uploading the dump as it is).

The servers and the tools share this machine's CPUs: moto is a Python process and the S3 figures are
bounded by it.  The 1-minute load average is printed; other work on the machine distorts the figures.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import gen_dump
from bench.bytecode import compile_dtstore, installed_like

MB = 1e6
PUT_OBJECT = 32 << 20
PASSWORD = "bench-password-not-secret"
ACCESS_KEY, SECRET_KEY, REGION = "bench-key", "bench-secret", "us-east-1"
STREAMS = {"s3": 8, "sftp": 4}  # dtstore's connections per backend (Capabilities.connections)


@dataclass
class Row:
    target: str
    what: str
    input_bytes: int
    stored_bytes: int
    seconds: float
    ok: bool = True
    note: str = ""
    load: tuple[float, float] = (0.0, 0.0)

    @property
    def input_rate(self) -> float:
        return self.input_bytes / MB / self.seconds if self.seconds else 0.0

    @property
    def stored_rate(self) -> float:
        return self.stored_bytes / MB / self.seconds if self.seconds else 0.0


@dataclass
class Report:
    size: int
    seed: int
    dump_bytes: int
    rows: list[Row] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------- servers
@dataclass
class S3Target:
    endpoint: str
    bucket: str
    proc: subprocess.Popen[bytes]

    def env(self) -> dict[str, str]:
        return {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_REGION": REGION,
                "AWS_DEFAULT_REGION": REGION, "AWS_ENDPOINT_URL": self.endpoint, "AWS_EC2_METADATA_DISABLED": "true"}

    def client(self) -> Any:
        import boto3  # type: ignore[import-untyped]

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=REGION,
                            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)

    def size(self, prefix: str) -> int:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix + "/")
        return sum(obj["Size"] for page in pages for obj in page.get("Contents", []))

    def delete(self, prefix: str) -> None:
        client = self.client()
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix + "/")
        for page in pages:
            keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys})


@contextmanager
def moto_server(work: Path) -> Iterator[S3Target]:
    """moto in server mode as its own process (as the ``s3_auth_server`` fixture starts it)."""
    from tests.servers.ports import LOOPBACK, die_with_parent, free_port, stop_server, wait_for_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MOTO_", "TEST_SERVER_MODE"))}
    log = work / "logs" / "moto.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", LOOPBACK, "-p", str(port)],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                                preexec_fn=die_with_parent)
    try:
        if not wait_for_port(port, 30, proc):
            raise RuntimeError(f"moto did not start; see {log}")
        target = S3Target(f"http://{LOOPBACK}:{port}", "bench", proc)
        target.client().create_bucket(Bucket=target.bucket)
        yield target
    finally:
        stop_server(proc)


@dataclass
class SFTPTarget:
    port: int
    user: str
    key: Path
    known_hosts: Path
    root: Path

    def env(self) -> dict[str, str]:
        return {"DTSTORE_SFTP_KEY": str(self.key), "DTSTORE_SFTP_KNOWN_HOSTS": str(self.known_hosts)}

    def url(self, name: str) -> str:
        return f"sftp://{self.user}@127.0.0.1:{self.port}{self.root / name}"

    def size(self, name: str) -> int:
        return sum(p.stat().st_size for p in (self.root / name).rglob("*") if p.is_file())

    def delete(self, name: str) -> None:
        shutil.rmtree(self.root / name, ignore_errors=True)


@contextmanager
def sshd_server(work: Path) -> Iterator[SFTPTarget]:
    """OpenSSH sshd with generated keys, as the ``sftp_server`` fixture starts it."""
    import getpass

    from tests.servers.ports import stop_server
    from tests.servers.sftp import PRIVSEP_DIR, _config, _keygen, _start

    base = work / "sshd"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    host_pub = _keygen(base / "host_ed25519")
    client_key = base / "client_ed25519"
    (base / "authorized_keys").write_text(_keygen(client_key) + "\n")
    config = base / "sshd_config"
    config.write_text(_config(base, base / "host_ed25519", base / "authorized_keys"))
    proc, port = _start(config, work / "logs" / "sshd.log")
    try:
        known_hosts = base / "known_hosts"
        known_hosts.write_text(f"[127.0.0.1]:{port} {host_pub}\n")
        root = work / "sftp-root"
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir()
        yield SFTPTarget(port, getpass.getuser(), client_key, known_hosts, root.resolve())
    finally:
        stop_server(proc)


# --------------------------------------------------------------------------- steps
def warm(path: Path) -> None:
    """Read the input once, so every step starts with it in the page cache."""
    with open(path, "rb") as f:
        while f.read(8 << 20):
            pass


def timed(fn: Callable[[], Any]) -> tuple[float, tuple[float, float], Any]:
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, (load0, os.getloadavg()[0]), result


def raw_puts(pipe_file: Callable[[str, bytes], None], prefix: str, dump: Path, streams: int) -> int:
    """Write the dump as 32 MiB objects, ``streams`` at a time; return the bytes written."""
    size = dump.stat().st_size
    offsets = range(0, size, PUT_OBJECT)

    def put(offset: int) -> int:
        with open(dump, "rb") as f:
            f.seek(offset)
            piece = f.read(PUT_OBJECT)
        pipe_file(f"{prefix}/{offset // PUT_OBJECT:05d}", piece)
        return len(piece)

    with ThreadPoolExecutor(streams) as pool:
        return sum(pool.map(put, offsets))


def run_logged(argv: list[str], env: dict[str, str], log: Path) -> tuple[int, str]:
    with open(log, "ab") as out:
        out.write(f"$ {' '.join(argv)}\n".encode())
        out.flush()
        done = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=out,
                              check=False)
        out.write(done.stdout)
    return done.returncode, done.stdout.decode(errors="replace")


def child_env(work: Path, tool: str, extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "DTSTORE_", "RESTIC_", "XDG_CACHE"))}
    cache = work / "cache" / f"{tool}-{uuid.uuid4().hex[:8]}"
    env.update(extra, DTSTORE_PASSWORD=PASSWORD, DTSTORE_CACHE_DIR=str(cache / "dtstore"),
               RESTIC_PASSWORD=PASSWORD, RESTIC_CACHE_DIR=str(cache / "restic"), XDG_CACHE_HOME=str(cache))
    return installed_like(env, work)


def dtstore_init(url: str, env: dict[str, str]) -> None:
    """Create the repository with the library (cheap KDF: key derivation is no part of the throughput)."""
    import dtstore
    from dtstore.crypto.keys import CHEAP_KDF

    saved = dict(os.environ)
    os.environ.update(env)
    try:
        dtstore.Repository.init(url, PASSWORD, kdf=CHEAP_KDF, cache_dir=env["DTSTORE_CACHE_DIR"]).close()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    shutil.rmtree(env["DTSTORE_CACHE_DIR"], ignore_errors=True)  # the snapshot starts with an empty cache


def dtstore_snapshot(url: str, dump: Path, env: dict[str, str], log: Path) -> tuple[bool, str]:
    code, out = run_logged([sys.executable, "-m", "dtstore.cli", "--json", "--quiet", "snapshot", "--repo", url,
                            str(dump)], env, log)
    return code == 0, out


def restic_cmd(repo: str, sftp: SFTPTarget | None) -> list[str]:
    argv = ["restic", "-r", repo]
    if sftp is not None:
        ssh = (f"ssh -p {sftp.port} -i {sftp.key} -o UserKnownHostsFile={sftp.known_hosts} "
               f"-o StrictHostKeyChecking=yes -o IdentitiesOnly=yes -o BatchMode=yes {sftp.user}@127.0.0.1 -s sftp")
        argv += ["-o", f"sftp.command={ssh}"]
    return argv


def restic_backup(repo: str, sftp: SFTPTarget | None, dump: Path, env: dict[str, str],
                  log: Path) -> tuple[bool, float, tuple[float, float]]:
    """``restic init`` (not timed), then the timed ``restic backup``: (ok, seconds, load average)."""
    base = restic_cmd(repo, sftp)
    code, _ = run_logged([*base, "init", "--repository-version", "2"], env, log)
    if code != 0:
        return False, 0.0, (0.0, 0.0)
    warm(dump)
    seconds, load, (code, _) = timed(lambda: run_logged([*base, "backup", "--host", "bench", str(dump)], env, log))
    return code == 0, seconds, load


# --------------------------------------------------------------------------- the run
def bench_target(kind: str, server: S3Target | SFTPTarget, dump: Path, work: Path, report: Report) -> None:
    size = dump.stat().st_size
    streams = STREAMS[kind]
    logs = work / "logs"

    # 1. raw puts, one stream and dtstore's number of streams
    if isinstance(server, S3Target):
        import s3fs

        fs = s3fs.S3FileSystem(key=ACCESS_KEY, secret=SECRET_KEY, skip_instance_cache=True,
                               client_kwargs={"endpoint_url": server.endpoint, "region_name": REGION})

        def pipe(path: str, data: bytes) -> None:
            fs.pipe_file(f"{server.bucket}/{path}", data)
    else:
        import sshfs

        fs = sshfs.SSHFileSystem("127.0.0.1", port=server.port, username=server.user,
                                 client_keys=[str(server.key)], known_hosts=str(server.known_hosts),
                                 skip_instance_cache=True)
        fs.makedirs(str(server.root / "raw"), exist_ok=True)

        def pipe(path: str, data: bytes) -> None:
            fs.pipe_file(str(server.root / path), data)

    for n in (1, streams):
        warm(dump)
        seconds, load, written = timed(functools.partial(raw_puts, pipe, "raw", dump, n))
        report.rows.append(Row(kind, f"plain puts, {n} stream{'s' if n > 1 else ''}", size, written, seconds,
                               load=load, note=f"{PUT_OBJECT >> 20} MiB objects"))
        server.delete("raw")
        if isinstance(server, SFTPTarget):
            fs.makedirs(str(server.root / "raw"), exist_ok=True)
        print(f"  {kind}: plain puts x{n}: {seconds:.1f} s", file=sys.stderr)

    # 2. dtstore
    extra = server.env()
    url = f"s3://{server.bucket}/dtstore" if isinstance(server, S3Target) else server.url("dtstore")
    env = child_env(work, "dtstore", extra)
    compile_dtstore(env)
    dtstore_init(url, env)  # outside the timing, like restic's init; the CLI's start-up is inside
    warm(dump)
    seconds, load, (ok, out) = timed(lambda: dtstore_snapshot(url, dump, env, logs / f"dtstore-{kind}.log"))
    stored = server.size("dtstore")
    note = ""
    if ok:
        summary: dict[str, Any] = next((json.loads(line) for line in out.splitlines() if '"summary"' in line), {})
        note = f"{summary.get('chunks_new', '?')} chunks, {summary.get('packs_written', '?')} packs"
    report.rows.append(Row(kind, "dtstore snapshot", size, stored, seconds, ok, note, load))
    print(f"  {kind}: dtstore: {seconds:.1f} s", file=sys.stderr)

    # 3. restic
    if shutil.which("restic"):
        repo = (f"s3:{server.endpoint}/{server.bucket}/restic" if isinstance(server, S3Target)
                else f"sftp:{server.user}@127.0.0.1:{server.root / 'restic'}")
        env = child_env(work, "restic", extra)
        ok, seconds, load = restic_backup(repo, server if isinstance(server, SFTPTarget) else None, dump, env,
                                          logs / f"restic-{kind}.log")
        report.rows.append(Row(kind, "restic backup", size, server.size("restic"), seconds, ok, "", load))
        print(f"  {kind}: restic: {seconds:.1f} s", file=sys.stderr)


def table(report: Report) -> str:
    head = ("| target | step | input MB | stored MB | wall s | MB/s input | MB/s stored | stored ÷ raw | "
            "input ÷ raw |\n|---|---|--:|--:|--:|--:|--:|--:|--:|")
    lines = [head]
    for target in dict.fromkeys(r.target for r in report.rows):
        rows = [r for r in report.rows if r.target == target]
        raw = max((r.stored_rate for r in rows if r.what.startswith("plain puts")), default=0.0)
        for r in rows:
            what = r.what if r.ok else f"{r.what} (FAILED)"
            shares = ["", ""] if r.what.startswith("plain") or not raw else [
                f"{100 * rate / raw:.0f} %" for rate in (r.stored_rate, r.input_rate)]
            lines.append(f"| {target} | {what} | {r.input_bytes / MB:.1f} | {r.stored_bytes / MB:.1f} | "
                         f"{r.seconds:.1f} | {r.input_rate:.1f} | {r.stored_rate:.1f} | {shares[0]} | {shares[1]} |")
    return "\n".join(lines)


def versions() -> dict[str, str]:
    import moto
    import s3fs
    import sshfs

    import dtstore

    found = {"dtstore": dtstore.__version__, "moto": moto.__version__, "s3fs": s3fs.__version__,
             "sshfs": getattr(sshfs, "__version__", "?")}
    for name, argv in (("restic", ["restic", "version"]), ("sshd", ["ssh", "-V"])):
        try:
            done = subprocess.run(argv, capture_output=True, text=True, check=False)
            found[name] = (done.stdout or done.stderr).strip().splitlines()[0]
        except OSError:
            found[name] = "not available"
    return found


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.remote", description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="256M", help="dump size (default 256M)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "dtstore-bench-remote")
    ap.add_argument("--targets", default="s3,sftp", help="comma-separated: s3, sftp")
    ap.add_argument("--json", type=Path, metavar="OUT", help="also write the figures as JSON")
    ap.add_argument("--keep", action="store_true", help="keep the SFTP repositories and logs")
    args = ap.parse_args(argv)

    size = gen_dump.parse_size(args.size)
    work: Path = args.workdir
    for sub in ("logs", "cache", "data"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    shutil.rmtree(work / "cache", ignore_errors=True)
    dump = work / "data" / f"dump-{size}-{args.seed}.sql"
    if not dump.exists():
        print(f"generating a {args.size} dump (seed {args.seed}) …", file=sys.stderr)
        gen_dump.write_dump(dump, size, args.seed)
    report = Report(size, args.seed, dump.stat().st_size, versions=versions())
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs", file=sys.stderr)
    with ExitStack() as stack:
        for kind in targets:
            print(f"{kind} …", file=sys.stderr)
            server: S3Target | SFTPTarget = (stack.enter_context(moto_server(work)) if kind == "s3"
                                             else stack.enter_context(sshd_server(work)))
            bench_target(kind, server, dump, work, report)
            if isinstance(server, SFTPTarget) and not args.keep:
                shutil.rmtree(server.root, ignore_errors=True)
    print(f"\ndump: {report.dump_bytes / MB:.1f} MB ({args.size}, seed {args.seed}); "
          f"load average now {os.getloadavg()[0]:.2f}\n")
    print(table(report))
    if args.json:
        args.json.write_text(json.dumps({**asdict(report)}, indent=2, default=str))
    return 0 if all(r.ok for r in report.rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
