# SPDX-License-Identifier: BSD-2-Clause
"""A Postfix socketmap client (socketmap_table(5)): netstring requests "name key", netstring
replies, on one kept-open connection, as Postfix's proxymap uses it."""
import re
import socket
import time


def netstring(data):
    if isinstance(data, str):
        data = data.encode("utf-8")
    return b"%d:%s," % (len(data), data)


class SocketmapClient:
    def __init__(self, addr, timeout=10.0):
        if isinstance(addr, str):
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        else:
            self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(addr)
        self.buf = b""

    def send_raw(self, data):
        self.sock.sendall(data)

    def read_reply(self):
        """One reply netstring's contents (str); None if the server closed the connection."""
        while True:
            m = re.match(rb"(\d+):", self.buf)
            if m:
                n = int(m.group(1))
                end = m.end() + n
                if len(self.buf) > end:
                    if self.buf[end:end + 1] != b",":
                        raise AssertionError("reply is not a netstring: %r" % self.buf)
                    data, self.buf = self.buf[m.end():end], self.buf[end + 1:]
                    return data.decode("utf-8")
            chunk = self.sock.recv(65536)
            if not chunk:
                if self.buf:
                    raise AssertionError("connection closed inside a reply: %r" % self.buf)
                return None
            self.buf += chunk

    def ask(self, name, key):
        """'OK data', 'NOTFOUND ', 'TEMP reason' or 'PERM reason'."""
        self.send_raw(netstring("%s %s" % (name, key)))
        reply = self.read_reply()
        if reply is None:
            raise AssertionError("connection closed instead of an answer to %s %s" % (name, key))
        return reply

    def closed(self, timeout=10.0):
        """True once the server has closed the connection (reads until EOF)."""
        deadline = time.time() + timeout
        self.sock.settimeout(timeout)
        while time.time() < deadline:
            try:
                if not self.sock.recv(65536):
                    return True
            except (ConnectionResetError, BrokenPipeError):
                return True
        return False

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def socketmap_addr(log_text):
    """(host, port) or a unix path from mailhostd's "socketmap on ..." log line."""
    m = re.search(r"socketmap on (?:unix:(\S+)|\[?([0-9a-f.:]+?)\]?:(\d+))\s", log_text)
    if not m:
        raise AssertionError("no 'socketmap on' line in the log")
    return m.group(1) or (m.group(2), int(m.group(3)))
