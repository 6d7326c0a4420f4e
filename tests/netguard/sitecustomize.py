"""Put on PYTHONPATH of subprocesses started by the tests: any internet socket fails.

Unix sockets (multiprocessing, Snakemake's own locks) stay allowed.
"""

import socket

_connect, _connect_ex = socket.socket.connect, socket.socket.connect_ex


def _guard(self, address, *args, _real=_connect):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        raise OSError(f"sdi tests: network access is forbidden (tried {address!r})")
    return _real(self, address, *args)


def _guard_ex(self, address, *args, _real=_connect_ex):
    if self.family in (socket.AF_INET, socket.AF_INET6):
        raise OSError(f"sdi tests: network access is forbidden (tried {address!r})")
    return _real(self, address, *args)


socket.socket.connect = _guard
socket.socket.connect_ex = _guard_ex
