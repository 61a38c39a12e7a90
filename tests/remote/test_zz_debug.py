import time
from tests.remote.test_faults import _NoDelayProxy
from tests.remote.common import child_env, run_cli, write_random
from tests.helpers import init_repo

def test_debug(s3_env, s3_server, tmp_path, monkeypatch):
    host, port = s3_server.endpoint_url.removeprefix("http://").split(":")
    proxy = _NoDelayProxy(host, int(port))
    init_repo(s3_env, tmp_path / "c").close()
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url())
    write_random(tmp_path / "src" / "a", 100000, seed=1)
    proxy.pause()
    for args in (["snapshots", "--repo", s3_env], ["snapshot", "--repo", s3_env, str(tmp_path / "src")]):
        t = time.time()
        run = run_cli(args, child_env(tmp_path / "cc"), timeout=300)
        print("EXIT", args[0], run.code, round(time.time() - t, 1), run.err[-200:])
    proxy.close()
