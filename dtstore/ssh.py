"""SSH client settings shared by the SFTP remote (``dtstore.storage``) and the connectors' command runner.

One rule for both: the server's host key is always checked.  asyncssh's ``known_hosts=None`` (which
sshfs uses when it is given nothing) trusts any key, so it is never passed:

* ``known_hosts``: an explicit file, else the first of the named environment variables that is set,
  else ``()``, asyncssh's default: ``~/.ssh/known_hosts`` (or ``UserKnownHostsFile`` from
  ``~/.ssh/config``).  A missing file trusts no key at all.
* ``client_keys``: explicit key files, else the first variable set (one file), else ``()``: the
  ssh-agent (``SSH_AUTH_SOCK``) and the default identities ``~/.ssh/id_*``.

This module imports nothing but the standard library, so any layer may use it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"


def known_hosts_option(explicit: str | os.PathLike[str] | None, *env_names: str) -> str | tuple[()]:
    """The ``known_hosts`` argument for ``asyncssh.connect``: never None."""
    if explicit is not None:
        return os.fspath(explicit)
    for name in env_names:
        if os.environ.get(name):
            return os.environ[name]
    return ()


def client_keys_option(explicit: Sequence[str | os.PathLike[str]] | None, *env_names: str) -> list[str] | tuple[()]:
    """The ``client_keys`` argument for ``asyncssh.connect``: ``()`` means agent and default identities."""
    if explicit is not None:
        return [os.fspath(key) for key in explicit]
    for name in env_names:
        if os.environ.get(name):
            return [os.environ[name]]
    return ()


def known_hosts_description(option: str | tuple[()]) -> str:
    """Where the host keys were looked up, for error messages."""
    return option if isinstance(option, str) else DEFAULT_KNOWN_HOSTS


def untrusted_host_key_advice(host: str, port: int, option: str | tuple[()], env_name: str) -> str:
    """How to trust a host whose key was not found (or did not match) in ``option``."""
    target = f"[{host}]:{port}" if port != 22 else host
    keyscan = f"ssh-keyscan -p {port} {host}" if port != 22 else f"ssh-keyscan {host}"
    return (
        f"the SSH host key of {target} is not trusted (unknown, or different from the one recorded in "
        f"{known_hosts_description(option)}); compare its fingerprint with the one the host's administrator "
        f"reports (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub on the host), then add the line "
        f"`{keyscan}` prints to {known_hosts_description(option)}, or point {env_name} at a file that has it"
    )
