"""The tests' network guard: any internet socket fails; unix sockets (multiprocessing, Snakemake's own
locks) stay allowed. The test process installs it from conftest.py; processes the tests start (the
Snakemake CLI and its jobs) install it from sitecustomize.py, with this folder on their PYTHONPATH."""

import socket

_REAL = (socket.socket.connect, socket.socket.connect_ex)


def install(error: type[Exception] = OSError) -> None:
    """Make every AF_INET / AF_INET6 connect raise ``error`` naming the address."""
    real_connect, real_connect_ex = _REAL

    def check(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            raise error(f"sdi tests: network access is forbidden (tried {address!r})")

    def connect(self, address, *args):
        check(self, address)
        return real_connect(self, address, *args)

    def connect_ex(self, address, *args):
        check(self, address)
        return real_connect_ex(self, address, *args)

    socket.socket.connect, socket.socket.connect_ex = connect, connect_ex


def uninstall() -> None:
    socket.socket.connect, socket.socket.connect_ex = _REAL
