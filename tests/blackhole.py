"""A TCP relay on loopback in front of a real server that can go silent on the connections it holds: their
bytes are dropped and nothing is closed or reset, as when a server's container is recreated at a new address
and the old one stops answering. New connections are relayed as before (the name now points at the new one)."""

from __future__ import annotations

import selectors
import socket
import threading


class Relay:
    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._pairs: dict[socket.socket, socket.socket] = {}
        self._silent: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def silence(self) -> int:
        """Every connection held now goes silent; how many."""
        with self._lock:
            self._silent |= set(self._pairs)
            return len(self._pairs) // 2

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        with self._lock:
            for sock in self._pairs:
                sock.close()
        self.listener.close()

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        self.listener.setblocking(False)
        selector.register(self.listener, selectors.EVENT_READ)
        while not self._stop.is_set():
            for key, _ in selector.select(timeout=0.1):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock is self.listener:
                    client, _ = self.listener.accept()
                    server = socket.create_connection(self.target, timeout=5)
                    with self._lock:
                        self._pairs[client], self._pairs[server] = server, client
                    for end in (client, server):
                        end.setblocking(False)
                        selector.register(end, selectors.EVENT_READ)
                    continue
                try:
                    data = sock.recv(65536)
                except OSError:
                    data = b""
                with self._lock:
                    other, silent = self._pairs.get(sock), sock in self._silent
                if silent:
                    continue  # read and dropped: no answer, no close, no reset
                if not data or other is None:
                    for end in (sock, other):
                        if end is not None:
                            selector.unregister(end)
                            end.close()
                            with self._lock:
                                self._pairs.pop(end, None)
                    continue
                other.sendall(data)
        selector.close()
