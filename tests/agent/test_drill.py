"""Restore drills: a private MariaDB backed up and drilled into a second one (timed, CHECK TABLE, the
scratch databases dropped), check queries, a target that already holds the databases, a damaged
snapshot that fails the drill with 16 and alerts a loopback webhook; a folder drill for a file job."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from dtstore.agent.drill import run_drill
from dtstore.agent.run import run_job
from dtstore.cli.main import main
from dtstore.storage import layout
from tests.agent.runhelp import Agent, defaults_file, make_agent, webhook_receiver
from tests.helpers import flip_byte
from tests.servers.postgresql import Cluster, chown_postgres, make_cluster, pg_dtstore  # noqa: F401 - fixture

if TYPE_CHECKING:
    import dtstore
    from tests.servers.mariadb import MariaDBFactory, MariaDBServer


@pytest.fixture
def agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Agent:
    return make_agent(tmp_path, monkeypatch)


def damage_item(agent: Agent, snapshot: dtstore.Snapshot, path: str) -> None:
    """Flip one byte inside the first chunk of a stored item, in its pack file on disk."""
    with agent.repo() as repo:
        item = repo.find_item(snapshot, path)
        location = repo._reader().locate(item.chunks[0])
    flip_byte(agent.repo_dir / layout.pack_name(location.pack_id, meta=False), location.offset + location.length // 2)


def seed(server: MariaDBServer) -> None:
    server.sql("CREATE DATABASE shop; CREATE TABLE shop.items (id INT PRIMARY KEY, name VARCHAR(40)) ENGINE=InnoDB;"
               "INSERT INTO shop.items VALUES (1, 'one'), (2, 'two'), (3, 'three');"
               "CREATE DATABASE crm; CREATE TABLE crm.contacts (id INT PRIMARY KEY, email TEXT) ENGINE=InnoDB;"
               "INSERT INTO crm.contacts VALUES (1, 'a@example.org')")


def mysql_jobs(agent: Agent, source: MariaDBServer, target: MariaDBServer, hook: str, checks: str = "") -> None:
    src_url = source.url(defaults_file=str(defaults_file(agent.base / "src.cnf", source.password)))
    dst_url = target.url(defaults_file=str(defaults_file(agent.base / "dst.cnf", target.password)))
    agent.write(f'[jobs.shop]\nrepository = "main"\nsource = "{src_url}"\n'
                'schedule = { full = "0 1 * * 0", log = "every 15m" }\n\n'
                f'[jobs.shop-drill]\nkind = "drill"\nof = "shop"\nschedule = "0 4 * * 6"\ntarget = "{dst_url}"\n'
                f'notify = ["ops"]\n{checks}\n',
                notify=f'[notify.ops]\nwebhook = "{hook}"\non = ["failure"]\n')


@pytest.mark.slow
def test_a_mysql_drill_restores_checks_times_and_drops(agent: Agent, mariadb_factory: MariaDBFactory) -> None:
    source = mariadb_factory("src", password="src-Secret-1")
    target = mariadb_factory("dst", password="dst-Secret-2", server_id=2)
    seed(source)
    with webhook_receiver() as (hook, received):
        mysql_jobs(agent, source, target, hook)
        config = agent.config()
        assert run_job(config, config.job("shop"), "full").exit_code == 0
        time.sleep(2.1)  # a restorable window of whole seconds for the random point
        source.sql("INSERT INTO shop.items VALUES (4, 'four')")
        assert run_job(config, config.job("shop"), "log").record["mode"] == "log"

        result = run_drill(config, config.job("shop-drill"))
        record = result.record
        assert result.exit_code == 0, record
        assert record["kind"] == "drill" and record["result"] == "ok" and record["of"] == "shop"
        assert record["restore_seconds"] > 0 and record["check_seconds"] >= 0
        assert record["duration_seconds"] >= record["restore_seconds"]
        assert sorted(record["restored"]) == ["crm", "shop"] and record["cleaned_up"] is True
        assert record["checks"] == ["CHECK TABLE crm: 1 table(s)", "CHECK TABLE shop: 1 table(s)"]
        assert target.databases() == []  # the scratch copy is gone
        assert agent.records("shop-drill") == [record]
        assert received.events == []  # a drill that passes alerts nobody (on = ["failure"])

        # the same with check queries, at a random point of the restorable window
        mysql_jobs(agent, source, target, hook, 'checks = ["SELECT name FROM shop.items WHERE id = 1", '
                                                 '"SELECT COUNT(*) FROM crm.contacts"]\npoint = "random"')
        config = agent.config()
        record = run_drill(config, config.job("shop-drill")).record
        assert record["result"] == "ok", (record["error"], record["point"])
        assert "random" in record["point"], record["point"]
        assert record["checks"][1] == "SELECT COUNT(*) FROM crm.contacts: 1 row(s)"
        assert target.databases() == []

        mysql_jobs(agent, source, target, hook, 'checks = ["SELECT name FROM shop.items WHERE id = 99"]')
        config = agent.config()
        failed = run_drill(config, config.job("shop-drill"))
        assert failed.exit_code == 1 and "returned no rows" in failed.record["error"]
        assert target.databases() == []
        events = received.wait(1)
        assert [e["type"] for e in events] == ["drill"] and events[0]["run"]["result"] == "failed"


@pytest.mark.slow
def test_a_drill_of_a_damaged_snapshot_fails_with_16_and_alerts(agent: Agent, mariadb_factory: MariaDBFactory,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    source = mariadb_factory("src", password="src-Secret-1")
    target = mariadb_factory("dst", password="dst-Secret-2", server_id=2)
    seed(source)
    with webhook_receiver() as (hook, received):
        mysql_jobs(agent, source, target, hook)
        config = agent.config()
        assert run_job(config, config.job("shop"), "full").exit_code == 0
        (full,) = agent.snapshots()
        damage_item(agent, full, "mysql/shop.sql")

        code = main(["--json", "drill", "shop-drill", "--config", str(agent.config_path)])
        assert code == 16
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        record = lines[0]
        assert record["result"] == "failed" and record["exit_code"] == 16 and "shop" in record["error"]
        assert record["cleaned_up"] is True and target.databases() == []  # crm was loaded, then dropped
        events = received.wait(1)
        assert len(events) == 1 and events[0]["type"] == "drill" and events[0]["job"] == "shop-drill"
        assert events[0]["run"]["exit_code"] == 16 and "damaged" in events[0]["message"]
        assert source.password not in json.dumps(events) + json.dumps(agent.records())


@pytest.mark.slow
def test_a_drill_never_touches_a_target_that_holds_the_databases(agent: Agent,
                                                                  mariadb_factory: MariaDBFactory) -> None:
    source = mariadb_factory("src", password="src-Secret-1")
    target = mariadb_factory("dst", password="dst-Secret-2", server_id=2)
    seed(source)
    target.sql("CREATE DATABASE shop; CREATE TABLE shop.mine (id INT) ENGINE=InnoDB; INSERT INTO shop.mine VALUES (7)")
    with webhook_receiver() as (hook, received):
        mysql_jobs(agent, source, target, hook)
        config = agent.config()
        assert run_job(config, config.job("shop"), "full").exit_code == 0
        result = run_drill(config, config.job("shop-drill"))
        assert result.exit_code == 2 and "already has database(s) shop" in result.record["error"]
        assert target.rows("SELECT id FROM shop.mine") == [("7",)] and target.databases() == ["shop"]
        assert [e["type"] for e in received.wait(1)] == ["drill"]


def test_a_folder_drill_of_a_file_job(agent: Agent) -> None:
    data = agent.base / "data"
    (data / "sub").mkdir(parents=True)
    (data / "a.txt").write_text("alpha\n" * 1000)
    (data / "sub" / "b.bin").write_bytes(bytes(range(256)) * 300)
    scratch = agent.base / "scratch"
    with webhook_receiver() as (hook, received):
        agent.write(f'[jobs.files]\nrepository = "main"\nsource = "{data}"\nschedule = {{ full = "every 1d" }}\n\n'
                    f'[jobs.files-drill]\nkind = "drill"\nof = "files"\nschedule = "0 4 * * 6"\n'
                    f'target = "{scratch}"\nnotify = ["ops"]\n',
                    notify=f'[notify.ops]\nwebhook = "{hook}"\non = ["drill"]\n')
        config = agent.config()
        assert run_job(config, config.job("files")).exit_code == 0
        result = run_job(config, config.job("files-drill"))  # dtstore run on a drill job runs the drill
        assert result.exit_code == 0, result.record
        assert result.record["checks"] == ["2 file(s) restored and verified"]
        assert list(scratch.iterdir()) == []
        (snap,) = agent.snapshots()
        damage_item(agent, snap, str(data / "sub" / "b.bin").lstrip("/"))
        failed = run_drill(config, config.job("files-drill"))
        assert failed.exit_code == 16 and "b.bin" in failed.record["error"]
        assert list(scratch.iterdir()) == []
        events = received.wait(2)
        assert [e["run"]["result"] for e in events] == ["ok", "failed"]


# --- PostgreSQL: a scratch data directory and server -----------------------------------------------------------

@pytest.fixture
def pg_cluster(pg_dtstore: Path) -> Iterator[Cluster]:  # noqa: F811
    yield from make_cluster(pg_dtstore)


@pytest.mark.slow
def test_a_postgresql_drill_restores_amchecks_and_removes_the_copy(agent: Agent, pg_cluster: Cluster) -> None:
    cluster = pg_cluster
    cluster.psql("CREATE TABLE items (id int PRIMARY KEY, name text)")
    cluster.psql("INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 500) g")
    assert cluster.dt("snapshot", cluster.url).returncode == 0  # the base backup, made as postgres
    cluster.psql("INSERT INTO items VALUES (501, 'after the base backup')")
    cluster.switch_and_wait()
    scratch = cluster.base / "scratch"
    scratch.mkdir()
    chown_postgres(scratch)
    port = cluster.port + 7
    target = f"postgresql://postgres@/?pgdata={scratch}/data&port={port}&socket_dir={cluster.socket_dir}"
    with webhook_receiver() as (hook, received):
        agent.config_path.write_text(
            f'[agent]\nstate_dir = "{agent.state_dir}"\n'
            f'[repositories.pg]\nurl = "{cluster.repo}"\npassword_file = "{cluster.password_file}"\n'
            f'[jobs.pg]\nrepository = "pg"\nsource = "{cluster.url}"\nschedule = {{ full = "0 1 * * *" }}\n'
            f'[jobs.pg-drill]\nkind = "drill"\nof = "pg"\nschedule = "0 4 * * 6"\ntarget = "{target}"\n'
            f'notify = ["ops"]\n'
            f'[notify.ops]\nwebhook = "{hook}"\non = ["drill"]\n')
        config = agent.config()
        result = run_drill(config, config.job("pg-drill"))
        assert result.exit_code == 0, result.record["error"]
        assert result.record["checks"] == ["pg_amcheck --all: no corruption found"]
        assert result.record["restore_seconds"] > 0 and result.record["restored"] == [f"{scratch}/data"]
        assert not (scratch / "data").exists()  # stopped and removed

        agent.config_path.write_text(agent.config_path.read_text().replace(
            'target = "', 'checks = ["SELECT name FROM items WHERE id = 501"]\ntarget = "'))
        config = agent.config()
        result = run_drill(config, config.job("pg-drill"))
        assert result.exit_code == 0, result.record
        assert result.record["checks"] == ["SELECT name FROM items WHERE id = 501: 1 row(s)"]
        assert not (scratch / "data").exists()
        assert [e["run"]["result"] for e in received.wait(2)] == ["ok", "ok"]
