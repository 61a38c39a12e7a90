"""The stage folder of a remote binlog fetch keeps its ``owner.pid`` for the whole run
(``spec/connectors.md`` §8 rule 4): without it, any other MySQL run that starts meanwhile (another
server, same temporary folder) takes the folder for a dead run's leftovers and removes it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from dtstore.connectors.stage import OWNER_FILE, PREFIX
from tests.connectors.contract import fakes_on_path
from tests.connectors.test_mysql_server import mysql_pwd, new_repo, seed, snap
from tests.servers.mariadb import MariaDBFactory

RECORDING_BINLOG = """
import json, os, subprocess, sys
subprocess.run([{real!r}, *sys.argv[1:]], check=True)
folder = next(a for a in sys.argv if a.startswith('--result-file=')).split('=', 1)[1]
with open({record!r}, 'a') as f:
    f.write(json.dumps(sorted(os.listdir(folder))) + '\\n')
"""


def test_a_remote_binlog_fetch_keeps_its_stage_folder_owned(mariadb_factory: MariaDBFactory, tmp_path: Path) -> None:
    src = mariadb_factory("src", password="src-Secret-1", max_binlog_size=16384)
    seed(src)
    repo = new_repo(tmp_path)
    snap(repo, src, "full")
    for _ in range(3):  # three closed binlogs to fetch
        src.sql("INSERT INTO crm.contacts SELECT seq + 1000, 'x@example.org', NOW(), NOW() FROM shop.seq_1_to_20;"
                "DELETE FROM crm.contacts WHERE id > 1000; FLUSH BINARY LOGS")
    record = tmp_path / "listings.jsonl"
    real = shutil.which("mariadb-binlog")
    stage = tmp_path / "stage"
    fake = {"mariadb-binlog": RECORDING_BINLOG.format(real=real, record=str(record))}
    with fakes_on_path(tmp_path / "bin", fake), mysql_pwd(src.password):
        log = snap(repo, src, "log", url=src.url(binlogs="remote"), stage=stage)
    assert log.source_metadata["transfer"] == "remote" and len(log.source_metadata["binlogs"]) >= 3
    listings = [json.loads(line) for line in record.read_text().splitlines()]
    assert len(listings) == len(log.source_metadata["binlogs"])
    assert all(OWNER_FILE in listing for listing in listings), listings  # never without its owner
    assert all(len([n for n in listing if n != OWNER_FILE]) == 1 for listing in listings), listings  # one at a time
    assert not list(stage.glob(f"{PREFIX}*")), "the run removed its stage folder"
