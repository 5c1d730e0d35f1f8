"""A throwaway redis-server on a free port, for tests that must own (and break) their Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import redis

from runtime.triton import free_port


class RedisProcess:
    """Start/stop/pause one redis-server; the port survives restarts."""

    def __init__(self, port: int | None = None, *extra: str, password: str | None = None,
                 unix_socket: str | None = None) -> None:
        """`unix_socket`: a path where it also listens (mode 700), beside its TCP port."""
        self.port = port or free_port()
        self.extra = extra + (("--unixsocket", unix_socket, "--unixsocketperm", "700") if unix_socket else ())
        self.password = password
        self.unix_socket = unix_socket
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def unix_url(self) -> str:
        if self.unix_socket is None:
            raise AttributeError("this redis-server listens on no unix socket")
        return f"unix://{self.unix_socket}?db=0"

    def start(self) -> "RedisProcess":
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--daemonize", "no", *self.extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2, password=self.password)
        deadline = time.monotonic() + 5
        while True:
            try:
                client.ping()
                break
            except redis.exceptions.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError(f"redis-server on {self.port} did not start")
                time.sleep(0.02)
        client.close()
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            self.proc.wait(5)
        self.proc = None

    def pause(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)
