"""A small TCP proxy for fault injection: ``cut()`` closes every connection through it and refuses
new ones until ``restore()``; ``delay`` adds latency to each forwarded chunk; ``arm(pattern)`` cuts
right after forwarding a client chunk that contains ``pattern`` (for PostgreSQL ``b"COMMIT"``: the
server commits, the client never hears of it — a commit whose outcome the client does not know)."""

from __future__ import annotations

import socket
import threading
import time


class Proxy:
    def __init__(self, target_host: str, target_port: int, *, delay: float = 0.0) -> None:
        self.target = (target_host, target_port)
        self.delay = delay
        self.down = False
        self.cuts = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        self._armed: list[tuple[bytes, float, float]] = []  # (pattern, wait before the cut, down time)
        self.tripped = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def arm(self, pattern: bytes, *, times: int = 1, wait: float = 0.05, down: float = 0.5) -> None:
        """The next ``times`` client chunks containing ``pattern``: forward it, wait ``wait`` s
        (the server acts on it), cut every connection for ``down`` s, restore."""
        with self._lock:
            self._armed += [(pattern, wait, down)] * times

    def _trip(self, data: bytes, from_client: bool) -> tuple[float, float] | None:
        if not from_client or not self._armed or self.down:
            return None
        with self._lock:
            for i, (pattern, wait, down) in enumerate(self._armed):
                if pattern in data:
                    del self._armed[i]
                    self.tripped += 1
                    return wait, down
        return None

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.down:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)  # idle pooled connections must stay open
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b, from_client in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pipe, args=(a, b, from_client), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, from_client: bool = False) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if self.delay:
                    time.sleep(self.delay)
                dst.sendall(data)
                trip = self._trip(data, from_client)
                if trip is not None:
                    wait, down = trip
                    time.sleep(wait)
                    self.cut()
                    timer = threading.Timer(down, self.restore)
                    timer.daemon = True
                    timer.start()
                    break
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def cut(self) -> None:
        """Close every open connection and refuse new ones."""
        self.down = True
        self.cuts += 1
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def restore(self) -> None:
        self.down = False

    def close(self) -> None:
        self._closed = True
        self.cut()
        self._listener.close()
