"""The agent's configuration file: the issue's example verbatim, every check naming its line, masking,
and ``dtstore config check|show`` (spec/agent.md §2)."""

from __future__ import annotations

import datetime as dt
import json
import textwrap
from pathlib import Path

import pytest

from dtstore.agent import config as agent_config
from dtstore.agent.config import ConfigError, Lines, find_config, load, mask_url
from dtstore.cli.main import main
from dtstore.snapshots.retention import RetentionPolicy
from tests.helpers import PASSWORD, init_repo

EXAMPLE = """\
[repositories.main]
url = "s3://backups/acme"            # or a path, sftp://…
password_file = "/etc/dtstore/password"

[jobs.shop]
repository = "main"
source = "mysql://backup@localhost/?socket=/run/mysqld/mysqld.sock"
schedule = { full = "0 1 * * 0", diff = "0 1 * * 1-6", log = "every 15m" }
retention = { keep_daily = 7, keep_weekly = 5, keep_monthly = 12 }
rpo = "30m"
timeout = "2h"
notify = ["ops"]

[jobs.files]
repository = "main"
source = "/etc"
schedule = { full = "every 6h" }

[notify.ops]
webhook = "https://hooks.example.com/dtstore"
email = "dba@example.com"
smtp = "smtp://mail.example.com:587"
on = ["failure", "rpo", "skipped"]
"""

UTC = dt.UTC


def write(tmp_path: Path, text: str, name: str = "dtstore.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(write(tmp_path, text))
    assert info.value.exit_code == 2
    return [str(p) for p in info.value.problems]


BASE = """\
[repositories.main]
url = "/srv/repo"
password_env = "PW"

"""


# --- the issue's example -------------------------------------------------------------------------

def test_the_issue_example_loads_as_written(tmp_path: Path) -> None:
    config = load(write(tmp_path, EXAMPLE))
    assert set(config.jobs) == {"shop", "files"} and set(config.repositories) == {"main"}
    repo = config.repositories["main"]
    assert (repo.url, repo.password_file, repo.password_command, repo.password_env) == (
        "s3://backups/acme", "/etc/dtstore/password", None, None)
    shop = config.jobs["shop"]
    assert shop.kind == "backup" and shop.repository == "main" and shop.connector == "mysql"
    assert shop.source == ("mysql://backup@localhost/?socket=/run/mysqld/mysqld.sock",)
    assert {m: s.text for m, s in shop.schedules.items()} == {"full": "0 1 * * 0", "diff": "0 1 * * 1-6",
                                                              "log": "every 15m"}
    assert shop.schedules["log"].interval == dt.timedelta(minutes=15)
    assert shop.retention == {"keep_daily": 7, "keep_weekly": 5, "keep_monthly": 12}
    assert shop.policy == RetentionPolicy(keep_daily=7, keep_weekly=5, keep_monthly=12)
    assert (shop.rpo, shop.rpo_derived, shop.timeout) == (dt.timedelta(minutes=30), False, dt.timedelta(hours=2))
    assert shop.notify == ("ops",) and shop.prune == "after-retention" and shop.retention_after == "full"
    # MySQL has no diff mode: the diff schedule takes a full, with a warning naming the line
    assert shop.snapshot_mode("diff") == "full" and shop.snapshot_mode("log") == "log"
    assert [str(w) for w in config.warnings] == [
        f"{tmp_path}/dtstore.toml:8: warning: jobs.shop.schedule.diff: the mysql connector has no diff mode: "
        "these runs take a full snapshot (the next larger mode)"]
    files = config.jobs["files"]
    assert files.source == ("/etc",) and files.connector is None and files.rpo == dt.timedelta(hours=12)
    assert files.rpo_derived and files.notify == () and files.excludes == {}
    ops = config.notify["ops"]
    assert (ops.webhook, ops.email, ops.smtp, ops.on) == ("https://hooks.example.com/dtstore", ("dba@example.com",),
                                                          "smtp://mail.example.com:587",
                                                          frozenset({"failure", "rpo", "skipped"}))


def test_config_check_offline_passes_the_example(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, EXAMPLE)
    assert main(["config", "check", "--offline", "--config", str(path)]) == 0
    err = capsys.readouterr()
    assert "dtstore.toml:8: warning: jobs.shop.schedule.diff" in err.err
    assert "dtstore.toml:3: warning: repositories.main.password_file: /etc/dtstore/password does not exist" in err.err
    assert "2 job(s), 1 repository(ies), 1 notify target(s): ok, 2 warning(s)" in err.out


def test_config_check_online_fails_on_the_missing_password_file(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "check", "--config", str(write(tmp_path, EXAMPLE))]) == 2
    err = capsys.readouterr().err
    assert "dtstore.toml:3: repositories.main.password_file: /etc/dtstore/password does not exist" in err


# --- every problem, with its line ------------------------------------------------------------------

def test_unknown_keys_and_tables_name_the_line_and_a_close_match(tmp_path: Path) -> None:
    found = problems(tmp_path, BASE + """\
        [jobs.shop]
        repository = "main"
        source = "/srv/shop"
        schedul = "0 1 * * *"
        schedule = "0 1 * * *"
        retention = { keep_dayly = 7 }

        [notfy.ops]
        webhook = "https://x"
        """)
    text = "\n".join(found)
    assert f"{tmp_path}/dtstore.toml:8: jobs.shop.schedul: unknown key in a backup job ([jobs.shop]) " \
           "(did you mean 'schedule'?)" in text
    assert "dtstore.toml:10: jobs.shop.retention.keep_dayly: unknown key in retention (the forget options, " \
           "snake_case) (did you mean 'keep_daily'?)" in text
    assert "dtstore.toml:12: notfy: unknown table (did you mean 'notify'?)" in text


def test_bad_schedules_durations_and_windows(tmp_path: Path) -> None:
    found = problems(tmp_path, BASE + """\
        [jobs.shop]
        repository = "main"
        source = "/srv/shop"
        schedule = { full = "0 1 * * 0", log = "every 15x" }
        rpo = "30 minutes"
        window = "22-6"
        timeout = "0s"
        """)
    [bad] = [p for p in found if "bad schedule" in p]
    assert bad.startswith(f"{tmp_path}/dtstore.toml:8: jobs.shop.schedule.log: bad schedule \"every 15x\": use cron")
    assert "every N{s,m,h,d}" in bad
    assert any(p.startswith(f"{tmp_path}/dtstore.toml:9: jobs.shop.rpo: bad duration") for p in found)
    assert any(p.startswith(f"{tmp_path}/dtstore.toml:10: jobs.shop.window: bad window") for p in found)
    assert any(p.startswith(f"{tmp_path}/dtstore.toml:11: jobs.shop.timeout: must be longer than 0s") for p in found)


def test_a_file_job_with_a_log_schedule_is_refused(tmp_path: Path) -> None:
    found = problems(tmp_path, BASE + """\
        [jobs.files]
        repository = "main"
        source = ["/etc", "/home"]
        schedule = { full = "@daily", log = "every 1h" }
        """)
    assert found == [f"{tmp_path}/dtstore.toml:8: jobs.files.schedule.log: a files or command job has no log mode; "
                     "it takes full"]


def test_unknown_repository_and_notify_target(tmp_path: Path) -> None:
    found = problems(tmp_path, BASE + """\
        [jobs.shop]
        repository = "mian"
        source = "/srv"
        schedule = "0 1 * * *"
        notify = ["opps"]
        """)
    assert f"{tmp_path}/dtstore.toml:6: jobs.shop.repository: no [repositories.mian] (did you mean 'main'?); " \
           "known: main" in found
    assert f"{tmp_path}/dtstore.toml:9: jobs.shop.notify: no [notify.opps]; known: none" in found


def test_missing_keys_are_reported_at_the_table_header(tmp_path: Path) -> None:
    found = problems(tmp_path, """\
        [repositories.main]
        url = "/srv/repo"

        [jobs.shop]
        source = "/srv"
        """)
    assert f"{tmp_path}/dtstore.toml:1: repositories.main: no password source: set one of password_file, " \
           "password_command, password_env" in found
    assert f"{tmp_path}/dtstore.toml:4: jobs.shop: repository is required" in found
    assert any(p.startswith(f"{tmp_path}/dtstore.toml:4: jobs.shop: no schedule") for p in found)


def test_a_connector_whose_extra_is_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "fakedb_connector.py").write_text("import dtstore_no_such_driver  # noqa\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from dtstore import connectors

    registry = dict(connectors.REGISTRY) | {"fakedb": ("fakedb_connector:CONNECTOR", "fakedb")}
    monkeypatch.setattr(connectors, "REGISTRY", registry)
    found = problems(tmp_path, BASE + """\
        [jobs.db]
        repository = "main"
        source = "fakedb://backup@localhost/"
        schedule = "0 1 * * *"
        """)
    assert found == [f"{tmp_path}/dtstore.toml:7: jobs.db.source: the fakedb connector needs an optional dependency "
                     "(dtstore_no_such_driver): pip install \"dtstore[fakedb]\""]


def test_an_unknown_connector_scheme(tmp_path: Path) -> None:
    found = problems(tmp_path, BASE + """\
        [jobs.db]
        repository = "main"
        source = "mysqll://backup@localhost/"
        schedule = "0 1 * * *"
        """)
    assert found[0].startswith(f"{tmp_path}/dtstore.toml:7: jobs.db.source: no connector for mysqll:// "
                               "(did you mean 'mysql'?)")


def test_not_valid_toml_names_the_line(tmp_path: Path) -> None:
    found = problems(tmp_path, BASE + """\
        [jobs.shop]
        repository = "main"
        source = /etc
        """)
    assert len(found) == 1 and found[0].startswith(f"{tmp_path}/dtstore.toml:7: not valid TOML: Invalid value")


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no configuration file here: give --config PATH or set DTSTORE_CONFIG"):
        load(tmp_path / "nope.toml")


def test_every_type_is_checked(tmp_path: Path) -> None:
    found = problems(tmp_path, """\
        [agent]
        timezone = "Europe/Berln"
        catch_up = "yes"
        run_log_keep = -1
        metrics_listen = "9898"

        [repositories.main]
        url = "/srv/repo"
        password_file = "/a"
        password_env = "B"
        limit_upload = "fast"
        env = { A = 1 }

        [jobs.shop]
        repository = "main"
        command = "pg_dump shop"
        schedule = "0 1 * * *"
        tags = ["a,b"]
        hooks = { before = "true", later = "x" }
        prune = "sometimes"
        retention = { keep_last = "3" }
        exclude = "*.tmp"

        [jobs.drill]
        kind = "drill"
        of = "shop"
        schedule = { drill = "0 4 * * 6" }
        target = "/tmp/x"

        [notify.ops]
        on = ["failures"]
        """)
    keys = {p.split(": ")[1] for p in found}
    assert {"agent.timezone", "agent.catch_up", "agent.run_log_keep", "agent.metrics_listen",
            "repositories.main.password_env", "repositories.main.limit_upload", "repositories.main.env",
            "jobs.shop", "jobs.shop.tags", "jobs.shop.hooks.later", "jobs.shop.prune", "jobs.shop.retention.keep_last",
            "jobs.shop.exclude", "jobs.drill.schedule", "jobs.drill.of", "notify.ops", "notify.ops.on"} <= keys, found
    assert any("did you mean 'failure'" in p for p in found)


def test_drill_jobs(tmp_path: Path) -> None:
    config = load(write(tmp_path, EXAMPLE + """
[jobs.shop-drill]
kind = "drill"
of = "shop"
schedule = "0 4 * * 6"
target = "mysql://root@localhost/?socket=/run/mysqld/scratch.sock"
point = "random"
checks = ["SELECT COUNT(*) FROM shop.items"]
timeout = "1h"
notify = ["ops"]
"""))
    drill = config.jobs["shop-drill"]
    assert (drill.kind, drill.of, drill.repository, drill.point) == ("drill", "shop", "main", "random")
    assert list(drill.schedules) == ["drill"] and drill.checks == ("SELECT COUNT(*) FROM shop.items",)
    assert drill.rpo is None
    found = problems(tmp_path, EXAMPLE + """
[jobs.files-drill]
kind = "drill"
of = "files"
schedule = "0 4 * * 6"
target = "mysql://root@localhost/"
""")
    assert any("jobs.files-drill.target: jobs.files backs up files: the target must be a folder" in p for p in found)


def test_retention_prune_and_rpo_options(tmp_path: Path) -> None:
    config = load(write(tmp_path, BASE + """\
        [jobs.files]
        repository = "main"
        source = "/etc"
        schedule = { full = "0 1 * * 0", diff = "0 1 * * 1-6" }
        retention = { keep_last = 3, keep_within = "1m2d", keep_tags = ["keep"] }
        prune = "0 3 * * 0"
        retention_after = "every"
        exclude = ["*.tmp"]
        exclude_caches = true
        exclude_larger_than = "2G"
        jitter = "5m"
        window = "22:00-06:00"
        full_every = "7d"
        tags = ["nightly"]
        """))
    files = config.jobs["files"]
    assert files.prune == "0 3 * * 0" and files.prune_schedule is not None and files.retention_after == "every"
    assert files.policy is not None and files.policy.keep_last == 3 and files.policy.keep_tags == ("keep",)
    assert files.rpo == dt.timedelta(days=2) and files.rpo_derived  # 2 × the daily union of full and diff
    assert files.make_excludes().exclude_larger_than == 2 << 30
    assert files.jitter == dt.timedelta(minutes=5) and files.window is not None and files.tags == ("nightly",)
    assert {w.key for w in config.warnings} == {"jobs.files.schedule.diff", "jobs.files.full_every"}


def test_empty_retention_is_refused(tmp_path: Path) -> None:
    found = problems(tmp_path, BASE + """\
        [jobs.files]
        repository = "main"
        source = "/etc"
        schedule = "@daily"
        retention = { keep_last = 0 }
        """)
    assert found == [f"{tmp_path}/dtstore.toml:9: jobs.files.retention: keeps nothing: it would remove every "
                     "snapshot; set keep_last, keep_daily, … or leave retention out"]


def test_timezone_is_used_for_cron_and_windows(tmp_path: Path) -> None:
    config = load(write(tmp_path, """\
        [agent]
        timezone = "Europe/Berlin"
        """ + BASE + """\
        [jobs.files]
        repository = "main"
        source = "/etc"
        schedule = "0 1 * * *"
        """))
    berlin = config.agent.tz
    assert config.agent.timezone == "Europe/Berlin"
    fire = config.jobs["files"].schedules["full"].next_fire(dt.datetime(2026, 12, 1, 12, tzinfo=UTC))
    assert fire == dt.datetime(2026, 12, 2, 1, tzinfo=berlin)


def test_quoted_job_names_and_sub_tables(tmp_path: Path) -> None:
    found = problems(tmp_path, BASE + """\
        [jobs."a.b"]
        repository = "main"
        source = "/etc"

        [jobs."a.b".schedule]
        full = "@weekly"
        diff = "every 1x"

        [jobs."a.b".hooks]
        afterr = "x"
        """)
    assert found == [
        f"{tmp_path}/dtstore.toml:11: jobs.\"a.b\".schedule.diff: bad schedule \"every 1x\": use cron (5 fields, "
        "e.g. \"0 1 * * 0\") or every N{s,m,h,d} (e.g. \"every 15m\")",
        f"{tmp_path}/dtstore.toml:14: jobs.\"a.b\".hooks.afterr: unknown key in hooks (did you mean 'after'?); "
        "known: before, after, on_failure"]


# --- line scanning ------------------------------------------------------------------------------

def test_lines_follow_tables_dotted_keys_and_skip_multiline_values() -> None:
    lines = Lines(textwrap.dedent('''\
        # a comment
        [agent]
        timezone = "UTC"

        [jobs."my job"]
        source = [
          "/etc",
          "x = 1",
        ]
        hooks.before = """
        [not.a.table]
        fake = 1
        """
        schedule = { full = "@daily",
                     log = "every 1h" }
        retention = { keep_daily = 7 }

        [[jobs.list]]
        'quoted key' = 2
        '''))
    assert lines.line(["agent", "timezone"]) == 3
    assert lines.line(["jobs", "my job"]) == 5
    assert lines.line(["jobs", "my job", "source"]) == 6
    assert lines.line(["jobs", "my job", "hooks", "before"]) == 10
    assert lines.line(["jobs", "my job", "hooks"]) == 10
    assert lines.line(["not", "a", "table"]) is None and lines.line(["jobs", "my job", "fake"]) == 5
    assert lines.line(["jobs", "my job", "schedule", "log"]) == 14
    assert lines.line(["jobs", "my job", "retention", "keep_daily"]) == 16
    assert lines.line(["jobs", "my job", "x"]) == 5  # not a key: inside the array
    assert lines.line(["jobs", "list", "quoted key"]) == 19
    assert lines.line(["nothing"]) is None


# --- where the file is, masking, config show --------------------------------------------------------------

def test_find_config_order(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DTSTORE_CONFIG", str(tmp_path / "env.toml"))
    assert find_config(str(tmp_path / "arg.toml")) == tmp_path / "arg.toml"
    assert find_config(None) == tmp_path / "env.toml"
    monkeypatch.delenv("DTSTORE_CONFIG")
    monkeypatch.setattr(agent_config, "_is_root", lambda: True)
    assert find_config(None) == Path("/etc/dtstore/dtstore.toml")
    monkeypatch.setattr(agent_config, "_is_root", lambda: False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert find_config(None) == tmp_path / "xdg" / "dtstore" / "dtstore.toml"


def test_mask_url() -> None:
    assert mask_url("sftp://backup:hunter2@host/srv/repo") == "sftp://backup:***@host/srv/repo"
    assert mask_url("smtp://u:p@mail:587") == "smtp://u:***@mail:587"
    assert mask_url("https://hooks.example.com/x?token=abc", query=True) == "https://hooks.example.com/x?***"
    assert mask_url("s3://bucket/prefix") == "s3://bucket/prefix"


SECRETS = BASE.replace('url = "/srv/repo"', 'url = "sftp://backup:hunter2@host/srv/repo"') + """\
[repositories.other]
url = "/srv/other"
password_command = "pass show dtstore"
env = { AWS_PROFILE = "backup", AWS_SECRET_ACCESS_KEY = "s3cr3t" }

[jobs.files]
repository = "main"
source = "/etc"
schedule = "0 1 * * *"

[notify.ops]
webhook = "https://hooks.example.com/x?token=abc"
email = ["a@example.com", "b@example.com"]
smtp = "smtps://dtstore:mailpw@mail.example.com:465"
smtp_password_env = "SMTP_PW"
"""


def test_config_show_masks_secrets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, SECRETS)
    assert main(["config", "show", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    for secret in ("hunter2", "s3cr3t", "token=abc", "mailpw", "pass show", "SMTP_PW", '"PW"'):
        assert secret not in out
    assert "AWS_PROFILE = \"backup\"" in out and "sftp://backup:***@host/srv/repo" in out
    assert "rpo = \"2d\"" in out and "rpo_derived = true" in out
    import tomllib

    shown = tomllib.loads(out)
    assert shown["jobs"]["files"]["schedule"] == {"full": "0 1 * * *"}
    assert "full" in shown["jobs"]["files"]["next"]


def test_config_show_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, EXAMPLE)
    assert main(["config", "show", "--json", "--config", str(path)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    [doc] = [e for e in lines if e["type"] == "config"]
    shop = doc["config"]["jobs"]["shop"]
    assert shop["run_modes"] == {"diff": "full"} and shop["rpo"] == "30m"
    assert doc["config"]["repositories"]["main"]["password_file"] == "***"
    assert lines[-1]["type"] == "summary" and lines[-1]["warnings"] == 1


def test_config_check_reports_every_problem_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, BASE + """\
        [jobs.a]
        repository = "x"
        source = "/etc"
        schedule = "every 15x"
        """)
    assert main(["config", "check", "--offline", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "dtstore.toml:6: jobs.a.repository: no [repositories.x]" in err
    assert "dtstore.toml:8: jobs.a.schedule: bad schedule \"every 15x\"" in err
    assert main(["config", "check", "--config", str(path)]) == 2
    assert "dtstore.toml:3: repositories.main.password_env: the environment variable PW is not set" in \
        capsys.readouterr().err  # the machine is checked too, in spite of the file's errors
    assert main(["--json", "config", "check", "--offline", "--config", str(path)]) == 2
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(e["line"], e["severity"]) for e in events if e["type"] == "problem"] == [
        (3, "warning"), (6, "error"), (8, "error")]
    assert events[-1]["type"] == "summary" and events[-1]["errors"] == 2 and events[-1]["warnings"] == 1


def test_config_check_opens_the_repository(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DTSTORE_CACHE_DIR", str(tmp_path / "cache"))
    init_repo(str(tmp_path / "repo"), tmp_path / "cache")
    (tmp_path / "pw").write_text(PASSWORD + "\n")
    (tmp_path / "bad").write_text("wrong\n")
    path = write(tmp_path, f"""\
        [repositories.good]
        url = "{tmp_path / 'repo'}"
        password_file = "{tmp_path / 'pw'}"

        [repositories.wrong]
        url = "{tmp_path / 'repo'}"
        password_file = "{tmp_path / 'bad'}"

        [repositories.missing]
        url = "{tmp_path / 'nothing-here'}"
        password_file = "{tmp_path / 'pw'}"

        [jobs.files]
        repository = "good"
        source = "{tmp_path}"
        schedule = "0 1 * * *"
        [jobs.w]
        repository = "wrong"
        source = "{tmp_path}"
        schedule = "0 1 * * *"
        [jobs.m]
        repository = "missing"
        source = "{tmp_path}"
        schedule = "0 1 * * *"
        """)
    assert main(["config", "check", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "repositories.good" not in err
    assert "dtstore.toml:7: repositories.wrong.password_file: cannot open" in err
    assert "dtstore.toml:10: repositories.missing.url: cannot open" in err and "no dtstore repository" in err
    assert main(["config", "check", "--offline", "--config", str(path)]) == 0
