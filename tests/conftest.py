pytest_plugins = ["tests.servers.s3", "tests.servers.sftp", "tests.servers.flaky", "tests.servers.mariadb"]
