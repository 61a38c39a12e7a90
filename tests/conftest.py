import os

from hypothesis import settings

pytest_plugins = ["tests.servers.s3", "tests.servers.sftp", "tests.servers.flaky", "tests.servers.mariadb"]

# CI runs the same examples every time (a failure there is reproducible); locally they vary.
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")
