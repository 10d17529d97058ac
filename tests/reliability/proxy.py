"""A loopback TCP proxy that misbehaves on demand, put between the client and moto."""

from __future__ import annotations

import socket
import struct
import threading
import time


class FaultyProxy:
    """Forwards 127.0.0.1:<port> to `target`. Faults, set at any time:
    reset_next   the next N new connections are reset at once (RST, no response)
    down         every new connection is reset
    delay_s      every new connection waits this long before it is forwarded
    """

    def __init__(self, target: tuple[str, int]):
        self.target = target
        self.reset_next = 0
        self.down = False
        self.delay_s = 0.0
        self.connections = 0
        self.resets = 0
        self._lock = threading.Lock()
        self._srv = socket.socket()
        self._srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._srv.bind(("127.0.0.1", 0))
        self._srv.listen(64)
        self.port = self._srv.getsockname()[1]
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._stop = True
        self._srv.close()

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self._srv.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(client,), daemon=True).start()

    def _handle(self, client: socket.socket) -> None:
        with self._lock:
            self.connections += 1
            reset = self.down or self.reset_next > 0
            if self.reset_next > 0:
                self.reset_next -= 1
            if reset:
                self.resets += 1
        if reset:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.close()
            return
        if self.delay_s:
            time.sleep(self.delay_s)
        try:
            upstream = socket.create_connection(self.target)
        except OSError:
            client.close()
            return
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
