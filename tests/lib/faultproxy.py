# SPDX-License-Identifier: BSD-2-Clause
"""A small threaded TCP proxy on loopback that injects network faults (Python 3 stdlib only).

    from faultproxy import FaultProxy
    with FaultProxy(("127.0.0.1", slapd.port)) as p:     # listens on 127.0.0.1:<free port>
        conf = "ldap_uri %s" % p.uri                      # ldap://127.0.0.1:<p.port>
        p.set_delay(1.5)    # every chunk, both ways, waits 1.5 s more before it is forwarded
        p.set_delay(0)      # chunks still waiting are sent at once
        p.blackhole()       # accepted, nothing forwarded either way (like a hung server)
        p.refuse()          # listener closed (connect: ECONNREFUSED), live connections reset
        p.swallow(b"uid=bob,")  # client->server chunks holding these bytes are dropped: the
                            # server never sees that request and never answers it (a server
                            # that hangs on one kind of request, e.g. one user's bind)
        p.restore()         # forwarding again, no delay, listening on the same port
        p.stats()           # {"accepted":, "active":, "up_bytes":, "down_bytes":, "swallowed":}

Nothing is a mock of LDAP: bytes are relayed unchanged to the real server.  Every thread is
a daemon thread that also checks a stop flag at least every 0.1 s; close() (or the context
manager) stops and joins them, so no proxy outlives a test.
"""
import socket
import threading
import time

__all__ = ["FaultProxy"]

_TICK = 0.1


class _Link:
    """One client connection and its upstream connection, relayed by two threads."""

    def __init__(self, proxy, client):
        self.proxy = proxy
        self.client = client
        self.upstream = None
        self.closed = threading.Event()
        self.threads = []

    def start(self):
        try:
            self.upstream = socket.create_connection(self.proxy.target, timeout=2.0)
            self.upstream.settimeout(_TICK)
            self.client.settimeout(_TICK)
        except OSError:
            # the real server is gone: the client sees its connection closed
            self.close(reset=False)
            return
        for src, dst, key in ((self.client, self.upstream, "up_bytes"),
                              (self.upstream, self.client, "down_bytes")):
            t = threading.Thread(target=self._pump, args=(src, dst, key), daemon=True)
            self.threads.append(t)
            t.start()

    def _pump(self, src, dst, key):
        p = self.proxy
        try:
            while not self.closed.is_set() and not p.stopping.is_set():
                if p.mode == "blackhole":
                    # leave the bytes in the kernel: they flow on after restore()
                    time.sleep(_TICK)
                    continue
                try:
                    data = src.recv(65536)
                except socket.timeout:
                    continue
                if not data:
                    break
                if key == "up_bytes" and p.swallowing and p.swallowing in data:
                    with p.lock:
                        p.counters["swallowed"] += 1
                    continue
                arrived = time.monotonic()
                # the delay is read again while waiting: set_delay(0) releases the chunk
                while not self.closed.is_set() and not p.stopping.is_set():
                    left = arrived + p.delay - time.monotonic()
                    if left <= 0 and p.mode != "blackhole":
                        break
                    time.sleep(min(_TICK, left) if left > 0 else _TICK)
                if self.closed.is_set() or p.stopping.is_set():
                    break
                if not self._send(dst, data):
                    break
                with p.lock:
                    p.counters[key] += len(data)
        except OSError:
            pass
        self.close(reset=False)

    def _send(self, dst, data):
        """sendall that keeps checking the stop flags (the socket has a short timeout)."""
        view = memoryview(data)
        while view:
            if self.closed.is_set() or self.proxy.stopping.is_set():
                return False
            try:
                n = dst.send(view)
            except socket.timeout:
                continue
            view = view[n:]
        return True

    def close(self, reset):
        if self.closed.is_set():
            return
        self.closed.set()
        for s in (self.client, self.upstream):
            if s is None:
                continue
            try:
                if reset:
                    # RST, as a crashed host or a firewall reject would send
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                 b"\x01\x00\x00\x00\x00\x00\x00\x00")
                s.close()
            except OSError:
                pass
        with self.proxy.lock:
            self.proxy.links.discard(self)


class FaultProxy:
    def __init__(self, target, host="127.0.0.1", port=0):
        self.target = tuple(target)
        self.host = host
        self.port = port
        self.mode = "pass"          # pass | blackhole | refuse
        self.delay = 0.0
        self.swallowing = None      # bytes: drop client->server chunks that hold them
        self.lock = threading.Lock()
        self.links = set()
        self.counters = {"accepted": 0, "up_bytes": 0, "down_bytes": 0, "swallowed": 0}
        self.stopping = threading.Event()
        self.listener = None
        self.accept_thread = None

    @property
    def uri(self):
        return "ldap://%s:%d" % (self.host, self.port)

    # ---------------------------------------------------------------- control
    def start(self):
        self._listen()
        return self

    def set_delay(self, seconds):
        self.delay = float(seconds)

    def swallow(self, pattern):
        """Drops every client->server chunk that contains pattern (bytes), until restore()."""
        self.swallowing = bytes(pattern)

    def blackhole(self):
        self.mode = "blackhole"

    def refuse(self):
        """Stops listening (new connections: ECONNREFUSED) and resets every live one."""
        self.mode = "refuse"
        self._unlisten()
        with self.lock:
            links = list(self.links)
        for link in links:
            link.close(reset=True)

    def restore(self):
        self.delay = 0.0
        self.swallowing = None
        if self.mode == "refuse":
            self.mode = "pass"
            self._listen()
        self.mode = "pass"

    def stats(self):
        with self.lock:
            d = dict(self.counters)
            d["active"] = len(self.links)
        return d

    def close(self):
        self.stopping.set()
        self._unlisten()
        with self.lock:
            links = list(self.links)
        for link in links:
            link.close(reset=False)
        for link in links:
            for t in link.threads:
                t.join(2.0)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()
        return False

    # -------------------------------------------------------------- internals
    def _listen(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.host, self.port))
        s.listen(128)
        s.settimeout(_TICK)
        self.port = s.getsockname()[1]
        self.listener = s
        self.accept_thread = threading.Thread(target=self._accept, args=(s,), daemon=True)
        self.accept_thread.start()

    def _unlisten(self):
        s, t = self.listener, self.accept_thread
        self.listener = self.accept_thread = None
        if s is not None:
            # the accept thread notices within one tick
            if t is not None and t is not threading.current_thread():
                t.join(2.0)
            try:
                s.close()
            except OSError:
                pass

    def _accept(self, s):
        while not self.stopping.is_set() and self.listener is s:
            try:
                c, _ = s.accept()
            except socket.timeout:
                continue
            except OSError:
                break
            with self.lock:
                self.counters["accepted"] += 1
            link = _Link(self, c)
            with self.lock:
                self.links.add(link)
            link.start()
