#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""The SMTP side of a demo backend: the end-to-end test's SmtpSink (tests/e2e/stack.py).

    python3 /opt/mailhostd/docker/smtp-sink.py OLD|NEW [PORT]     (default port 2525)

It accepts every message and keeps it in memory (the client sees "250 2.0.0 Ok: queued
on OLD"), and prints one line per session to stdout.  In docker/compose.yaml it shares the
network namespace of its Dovecot container (network_mode: service:dovecot-old), so it
listens on the backend's address, as the tests' sinks listen on 127.0.0.11 / 127.0.0.12.
SmtpSink binds port 0 (a free one) for the tests; here server_bind() puts the fixed port
in.  Stops on SIGTERM (it runs as PID 1).
"""

import os
import signal
import sys
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "tests", "e2e"))
from stack import SmtpSink, _SinkHandler  # noqa: E402


_this = threading.local()        # each connection has its own thread (ThreadingMixIn)


class Sessions(list):
    """SmtpSink.sessions that also remembers the session of the calling thread."""

    def append(self, session):
        super().append(session)
        _this.session = session


class Handler(_SinkHandler):
    def handle(self):
        try:
            super().handle()
        finally:
            s = getattr(_this, "session", {})
            if s.get("commands"):          # not the health check's connect-and-close
                print("smtp-sink %s: %s helo=%r auth=%r from=%r rcpt=%r data=%s" % (
                    self.server.label, self.client_address[0], s.get("helo"),
                    s.get("auth_user"), s.get("mail_from"), s.get("rcpt"),
                    "%d bytes" % len(s["data"]) if s.get("data") is not None else "none"),
                    flush=True)


class Sink(SmtpSink):
    port = 2525

    def server_bind(self):
        self.server_address = (self.server_address[0], self.port)
        super().server_bind()


def main():
    if len(sys.argv) not in (2, 3) or sys.argv[1] not in ("OLD", "NEW"):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    if len(sys.argv) == 3:
        Sink.port = int(sys.argv[2])
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    sink = Sink(sys.argv[1], "0.0.0.0")
    sink.RequestHandlerClass = Handler
    sink.sessions = Sessions()
    print("smtp-sink %s: listening on %s:%d" % (sink.label, sink.address, sink.port),
          flush=True)
    try:
        sink.serve_forever(poll_interval=0.5)
    finally:
        sink.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
