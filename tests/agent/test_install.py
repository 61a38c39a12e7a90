"""systemd timers, crontab lines and schtasks commands for ``dtstore schedule install|remove``
(spec/agent.md §9): golden files pin the output; ``UPDATE_GOLDEN=1`` rewrites them."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import subprocess
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from dtstore.agent import install
from dtstore.agent.config import Config, load
from dtstore.agent.install import InstallError, Plan
from dtstore.cli.main import main

GOLDEN = Path(__file__).parent / "golden"
CONFIG_PATH = "/etc/dtstore/dtstore.toml"
PROGRAM = ("/usr/bin/dtstore",)
WIN_CONFIG = r"C:\ProgramData\dtstore\dtstore.toml"
WIN_PROGRAM = (r"C:\Program Files\dtstore\dtstore.exe",)

CONFIG = """\
[agent]
timezone = "Europe/Berlin"

[repositories.main]
url = "s3://backups/acme"
password_file = "/etc/dtstore/password"

[jobs.shop]
repository = "main"
source = "mysql://backup@localhost/?socket=/run/mysqld/mysqld.sock"
schedule = { full = "0 1 * * 0", diff = "0 1 * * 1-6", log = "every 15m" }
retention = { keep_daily = 7, keep_weekly = 5, keep_monthly = 12 }
timeout = "2h"
jitter = "2m"

[jobs.files]
repository = "main"
source = ["/etc", "/srv/100% data"]
schedule = { full = "every 6h" }
retention = { keep_last = 10 }
prune = "30 3 1,15 * 1"

[jobs.shop-drill]
kind = "drill"
of = "shop"
schedule = "0 4 * * 6"
target = "mysql://root@localhost/?socket=/run/mysqld/scratch.sock"
"""


@pytest.fixture
def config(tmp_path: Path) -> Config:
    path = tmp_path / "dtstore.toml"
    path.write_text(CONFIG)
    return load(path)


def golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"no golden file {path}: run with UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"{name} differs from the golden file (UPDATE_GOLDEN=1 rewrites it)"


def make(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "c.toml"
    path.write_text(textwrap.dedent(text))
    return load(path)


BASE = """\
[repositories.main]
url = "/srv/repo"
password_env = "PW"

"""


# --- golden output -------------------------------------------------------------------------------------

def test_systemd_golden(config: Config) -> None:
    units = install.systemd_units(config, CONFIG_PATH, PROGRAM)
    names = ("shop-full", "shop-diff", "shop-log", "files-full", "files-prune", "shop-drill")
    assert list(units) == [f"dtstore-{n}.{k}" for n in names for k in ("service", "timer")]
    golden("systemd.txt", "".join(f"### {name}\n{text}" for name, text in units.items()))


def test_cron_golden(config: Config) -> None:
    golden("crontab.txt", "\n".join(install.cron_lines(config, CONFIG_PATH, PROGRAM)) + "\n")


def test_schtasks_golden(config: Config) -> None:
    tasks = install.windows_tasks(config, WIN_CONFIG, WIN_PROGRAM)
    golden("schtasks.txt", "".join(subprocess.list2cmdline(argv) + "\n" for argv in tasks.values()))


# --- translations ---------------------------------------------------------------------------------------

def test_on_calendar_translations(tmp_path: Path) -> None:
    config = make(tmp_path, BASE + """\
        [jobs.a]
        repository = "main"
        source = "/etc"
        schedule = { full = "*/20 8-18 * 1,7 *", diff = "15 2 1 * *" }
        """)
    units = install.systemd_units(config, "/c.toml", PROGRAM)
    assert "OnCalendar=*-01,07-* 08,09,10,11,12,13,14,15,16,17,18:00/20:00\n" in units["dtstore-a-full.timer"]
    assert "OnCalendar=*-*-01 02:15:00\n" in units["dtstore-a-diff.timer"]


def test_intervals_that_do_not_divide_a_day(tmp_path: Path) -> None:
    config = make(tmp_path, BASE + """\
        [jobs.a]
        repository = "main"
        source = "/etc"
        schedule = "every 7m"
        """)
    timer = install.systemd_units(config, "/c.toml", PROGRAM)["dtstore-a-full.timer"]
    assert "OnActiveSec=420s\nOnUnitActiveSec=420s\n" in timer and "OnCalendar" not in timer
    plan = install.systemd_install(config, "/c.toml", PROGRAM, tmp_path, {}, user=True)
    assert any("OnUnitActiveSec" in n for n in plan.notes)
    with pytest.raises(InstallError, match=r"jobs\.a\.schedule\.full: \"every 7m\" cannot be a crontab line"):
        install.cron_lines(config, "/c.toml", PROGRAM)
    assert install.windows_tasks(config, "/c.toml", PROGRAM)["dtstore\\a-full"][7:11] == ["/SC", "MINUTE", "/MO", "7"]


@pytest.mark.parametrize(("text", "cron"), [("every 1m", "* * * * *"), ("every 15m", "*/15 * * * *"),
                                            ("every 1h", "0 * * * *"), ("every 6h", "0 */6 * * *"),
                                            ("every 1d", "0 0 * * *"), ("every 120s", "*/2 * * * *")])
def test_cron_intervals(tmp_path: Path, text: str, cron: str) -> None:
    config = make(tmp_path, BASE + f"""\
        [jobs.a]
        repository = "main"
        source = "/etc"
        schedule = "{text}"
        """)
    assert install.cron_lines(config, "/c.toml", PROGRAM)[2].startswith(cron + " /usr/bin/dtstore run a")


@pytest.mark.parametrize(("cron", "triggers"), [
    ("*/10 * * * *", [["/SC", "MINUTE", "/MO", "10", "/ST", "00:00"]]),
    ("5 * * * *", [["/SC", "HOURLY", "/MO", "1", "/ST", "00:05"]]),
    ("0 */4 * * *", [["/SC", "HOURLY", "/MO", "4", "/ST", "00:00"]]),
    ("30 1,13 * * *", [["/SC", "DAILY", "/ST", "01:30"], ["/SC", "DAILY", "/ST", "13:30"]]),
    ("0 2 * * 1-5", [["/SC", "WEEKLY", "/D", "MON,TUE,WED,THU,FRI", "/ST", "02:00"]]),
    ("0 2 1 1,7 *", [["/SC", "MONTHLY", "/D", "1", "/M", "JAN,JUL", "/ST", "02:00"]]),
    ("0 2 * 3 *", [["/SC", "MONTHLY", "/D", "*", "/M", "MAR", "/ST", "02:00"]]),
])
def test_schtasks_triggers(tmp_path: Path, cron: str, triggers: list[list[str]]) -> None:
    config = make(tmp_path, BASE + f"""\
        [jobs.a]
        repository = "main"
        source = "/etc"
        schedule = "{cron}"
        """)
    tasks = install.windows_tasks(config, "/c.toml", PROGRAM)
    assert [argv[7:-2] for argv in tasks.values()] == triggers
    assert all(argv[-2:] == ["/RU", "SYSTEM"] for argv in tasks.values())


@pytest.mark.parametrize(("cron", "message"), [("* 1 * * *", "needs 60 tasks a day"),
                                               ("0 1 * 2 1", "cannot limit weekdays to months"),
                                               ("0 1 L * *", "croniter extension")])
def test_what_schtasks_cannot_express(tmp_path: Path, cron: str, message: str) -> None:
    config = make(tmp_path, BASE + f"""\
        [jobs.a]
        repository = "main"
        source = "/etc"
        schedule = "{cron}"
        """)
    with pytest.raises(InstallError, match=message):
        install.windows_tasks(config, "/c.toml", PROGRAM)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
@pytest.mark.parametrize("cron", ["0 1 * * 0", "0 1 * * 1-6", "*/20 8-18 * 1,7 *", "15 2 1 * *", "30 3 1,15 * 1",
                                  "0 4 * * 6", "45 23 * * 5,6,0"])
def test_systemd_agrees_with_the_agent_on_the_fire_times(tmp_path: Path, cron: str) -> None:
    """systemd-analyze reads our OnCalendar= values; away from DST days its next times are ours."""
    config = make(tmp_path, """\
        [agent]
        timezone = "Europe/Berlin"
        """ + BASE + f"""\
        [jobs.a]
        repository = "main"
        source = "/etc"
        schedule = "{cron}"
        """)
    schedule = config.jobs["a"].schedules["full"]
    base = dt.datetime(2026, 5, 4, 12, tzinfo=dt.UTC)
    ours: list[dt.datetime] = []
    moment = base
    for _ in range(6):
        moment = schedule.next_fire(moment)
        ours.append(moment)
    theirs: set[dt.datetime] = set()
    timer = install.systemd_units(config, "/c.toml", PROGRAM)["dtstore-a-full.timer"]
    for calendar in re.findall(r"^OnCalendar=(.*)$", timer, flags=re.MULTILINE):
        done = subprocess.run(["systemd-analyze", "calendar", "--iterations=6", "--base-time=2026-05-04 12:00 UTC",
                               calendar], capture_output=True, text=True, check=False, env={**os.environ, "TZ": "UTC"})
        if "--base-time" in done.stderr:
            pytest.skip("systemd-analyze without --base-time")
        assert done.returncode == 0, done.stderr
        for stamp in re.findall(r"(?:Next elapse|Iter\. #\d+): \w+ (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC", done.stdout):
            theirs.add(dt.datetime.fromisoformat(stamp).replace(tzinfo=dt.UTC))
    assert sorted(theirs)[:6] == ours


# --- install and remove write and delete exactly their entries --------------------------------------------------

def test_systemd_install_replaces_stale_units_and_remove_deletes_only_its_own(tmp_path: Path, config: Config) -> None:
    unit_dir = tmp_path / "units"
    unit_dir.mkdir()
    (unit_dir / "dtstore-old-log.timer").write_text(f"{install.MARKER}{CONFIG_PATH}\n[Timer]\n")
    (unit_dir / "dtstore-other.timer").write_text(f"{install.MARKER}/etc/other.toml\n")
    (unit_dir / "dtstore-agent.service").write_text("[Service]\n")
    ran: list[list[str]] = []

    def runner(argv: list[str], **_: Any) -> Any:
        ran.append(argv)
        return SimpleNamespace(returncode=0, stdout="", stderr="")

    plan = install.systemd_install(config, CONFIG_PATH, PROGRAM, unit_dir, install.read_unit_dir(unit_dir), user=False)
    install.apply(plan, run=runner)
    names = sorted(p.name for p in unit_dir.iterdir())
    assert "dtstore-old-log.timer" not in names and "dtstore-other.timer" in names and "dtstore-agent.service" in names
    assert len(names) == 12 + 2
    assert ran[0] == ["systemctl", "disable", "--now", "dtstore-old-log.timer"]
    assert ran[1] == ["systemctl", "daemon-reload"]
    assert ran[2][:3] == ["systemctl", "enable", "--now"] and len(ran[2]) == 3 + 6
    ran.clear()
    install.apply(install.systemd_remove(CONFIG_PATH, unit_dir, install.read_unit_dir(unit_dir), user=True), run=runner)
    assert sorted(p.name for p in unit_dir.iterdir()) == ["dtstore-agent.service", "dtstore-other.timer"]
    assert ran[0][:4] == ["systemctl", "--user", "disable", "--now"] and ran[-1] == ["systemctl", "--user",
                                                                                      "daemon-reload"]
    assert install.systemd_remove(CONFIG_PATH, unit_dir, install.read_unit_dir(unit_dir), user=True) == Plan()


def test_crontab_block_is_replaced_and_removed(config: Config) -> None:
    mine = "\n".join(install.cron_lines(config, CONFIG_PATH, PROGRAM))
    other = f"{install.BEGIN}/etc/other.toml\n* * * * * other\n{install.END}/etc/other.toml"
    crontab = f"MAILTO=root\n0 5 * * * /usr/local/bin/logrotate-ish\n\n{mine.replace('0 1', '0 2')}\n{other}\n"
    [command] = install.cron_install(config, CONFIG_PATH, PROGRAM, crontab).commands
    assert command.argv == ("crontab", "-") and command.input is not None
    assert command.input == f"MAILTO=root\n0 5 * * * /usr/local/bin/logrotate-ish\n\n{other}\n\n{mine}\n"
    [removal] = install.cron_remove(CONFIG_PATH, command.input).commands
    assert removal.input == f"MAILTO=root\n0 5 * * * /usr/local/bin/logrotate-ish\n\n{other}\n"
    assert install.cron_remove(CONFIG_PATH, "0 5 * * * x\n") == Plan()
    with pytest.raises(Exception, match="without its end marker"):
        install.cron_remove(CONFIG_PATH, f"{install.BEGIN}{CONFIG_PATH}\n* * * * * x\n")


def test_cron_escapes_percent_and_quotes(tmp_path: Path) -> None:
    config = make(tmp_path, BASE + """\
        [jobs."my job"]
        repository = "main"
        source = "/etc"
        schedule = "0 1 * * *"
        """)
    line = install.cron_lines(config, "/etc/100% sure/d.toml", PROGRAM)[2]
    assert line == "0 1 * * * /usr/bin/dtstore run 'my job' --mode full --config '/etc/100\\% sure/d.toml'"


def test_windows_install_deletes_stale_tasks_and_remove_its_own(config: Config) -> None:
    query = "\n".join([
        '"HOST","\\dtstore\\old-log","N/A","Ready","Interactive","N/A","0","me","\\"C:\\x\\dtstore.exe\\" run old '
        f'--mode log --config {WIN_CONFIG}","x"',
        '"HOST","\\dtstore\\elsewhere","N/A","Ready","Interactive","N/A","0","me",'
        '"dtstore run e --config C:\\o.toml",""',
        '"HOST","\\Microsoft\\Defrag","N/A","Ready","Interactive","N/A","0","me","defrag.exe",""',
    ])
    existing = install.parse_task_query(query)
    assert existing[0][0] == "dtstore\\old-log"
    plan = install.windows_install(config, WIN_CONFIG, WIN_PROGRAM, existing)
    assert [c.argv for c in plan.before] == [("schtasks", "/Delete", "/F", "/TN", "dtstore\\old-log")]
    assert len(plan.commands) == 7 and any("machine's zone" in n for n in plan.notes)
    removal = install.windows_remove(WIN_CONFIG, existing)
    assert [c.argv[-1] for c in removal.commands] == ["dtstore\\old-log"]


# --- the command ---------------------------------------------------------------------------------------

def test_schedule_install_dry_run_prints_and_changes_nothing(tmp_path: Path, config: Config,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    unit_dir = tmp_path / "units"
    assert main(["schedule", "install", "--systemd", "--dry-run", "--config", str(config.path),
                 "--unit-dir", str(unit_dir), "--program", "/usr/bin/dtstore"]) == 0
    out = capsys.readouterr().out
    assert not unit_dir.exists()
    assert f"# write {unit_dir}/dtstore-shop-log.timer" in out and "$ systemctl" in out
    assert f"ExecStart=/usr/bin/dtstore run shop --mode log --config {config.path}" in out
    assert main(["schedule", "install", "--windows", "--dry-run", "--config", str(config.path)]) == 0
    assert "schtasks /Create /F /TN dtstore\\shop-log" in capsys.readouterr().out
    assert main(["schedule", "install", "--windows", "--config", str(config.path)]) == 2
    assert "only on Windows" in capsys.readouterr().err


def test_schedule_install_and_remove_write_units(tmp_path: Path, config: Config,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    unit_dir = tmp_path / "units"
    common = ["--systemd", "--no-enable", "--config", str(config.path), "--unit-dir", str(unit_dir)]
    assert main(["schedule", "install", *common, "--program", "/opt/dtstore"]) == 0
    assert len(list(unit_dir.iterdir())) == 12
    assert "6 entries installed" in capsys.readouterr().out
    assert main(["--json", "schedule", "remove", *common]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert events[-1]["type"] == "summary" and events[-1]["changes"] == 12
    assert list(unit_dir.iterdir()) == []
