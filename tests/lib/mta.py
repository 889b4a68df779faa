# SPDX-License-Identifier: BSD-2-Clause
"""A small SMTP sender that behaves as a sending MTA does (Python 3 stdlib only).

    mta = Mta("127.0.0.21", 2525)
    msg = mta.message("alice@example.com", "subject")      # a unique Message-ID
    mta.queue(msg)
    mta.run(deadline=30)        # tries until each recipient got a final answer, or deadline
    msg.outcome["alice@example.com"]   # ("accepted"|"rejected"|"pending", code, text)

A 4xx answer (at connect, MAIL, RCPT or DATA) or a broken connection leaves the recipient
queued: it is tried again later, as an MTA keeps mail it could not hand over.  A 5xx
answer is final: never retried (the sender would bounce).  A 2xx after DATA is final too:
the receiving server is responsible from then on.  Each message keeps a log of every try.
"""

import email.utils
import smtplib
import socket
import time


class Message:
    def __init__(self, sender, rcpts, subject, body="hello\r\n"):
        self.sender = sender
        self.rcpts = list(rcpts)
        self.subject = subject
        self.msgid = email.utils.make_msgid(domain="sender.e2e.test")
        self.data = ("From: <%s>\r\nTo: %s\r\nSubject: %s\r\nMessage-ID: %s\r\n"
                     "Date: %s\r\n\r\n%s"
                     % (sender, ", ".join("<%s>" % r for r in self.rcpts), subject,
                        self.msgid, email.utils.formatdate(), body))
        # recipient -> ("pending"|"accepted"|"rejected", code, text)
        self.outcome = {r: ("pending", None, "not tried") for r in self.rcpts}
        self.tries = []            # (monotonic time, recipient or "*", code, text)
        self.first_temp = {}       # recipient -> (code, text) of its first 4xx

    def pending(self):
        return [r for r, o in self.outcome.items() if o[0] == "pending"]

    def answered(self, rcpt):
        """The final code for rcpt, or None while it is pending."""
        o = self.outcome[rcpt]
        return None if o[0] == "pending" else o[1]

    def temp_failures(self, rcpt=None):
        return [t for t in self.tries if 400 <= (t[2] or 0) < 500 and rcpt in (None, t[1])]


class Mta:
    """Sends queued messages to one SMTP server (address, port)."""

    def __init__(self, address, port, helo="mta.remote.example", timeout=15.0):
        self.address = address
        self.port = port
        self.helo = helo
        self.timeout = timeout
        self.messages = []

    def message(self, rcpts, subject, sender="sender@remote.example", queue=True):
        if isinstance(rcpts, str):
            rcpts = [rcpts]
        m = Message(sender, rcpts, subject)
        if queue:
            self.messages.append(m)
        return m

    def pending(self):
        return [m for m in self.messages if m.pending()]

    def run(self, deadline, messages=None, first_delay=0.05, max_delay=1.0):
        """Tries the pending messages (all queued ones, or messages) until none is pending
        or deadline seconds have passed; between rounds it waits a growing retry interval,
        as an MTA's queue does.  Returns the messages still pending."""
        todo = [m for m in (messages or self.messages) if m.pending()]
        end = time.monotonic() + deadline
        delay = first_delay
        while todo:
            for m in todo:
                self.try_once(m)
            todo = [m for m in todo if m.pending()]
            if not todo or time.monotonic() + delay > end:
                break
            time.sleep(delay)            # the retry interval of a sending MTA
            delay = min(delay * 2, max_delay)
        return todo

    def try_once(self, m):
        """One SMTP transaction for m's pending recipients."""
        rcpts = m.pending()
        if not rcpts:
            return
        now = time.monotonic

        def note(rcpt, code, text):
            if isinstance(text, bytes):
                text = text.decode("utf-8", "replace")
            m.tries.append((now(), rcpt, code, text))
            if code is not None and 400 <= code < 500 and rcpt != "*":
                m.first_temp.setdefault(rcpt, (code, text))
            return text

        def final(rcpts_, kind, code, text):
            for r in rcpts_:
                m.outcome[r] = (kind, code, text)

        s = None
        try:
            s = smtplib.SMTP(timeout=self.timeout)
            code, text = s.connect(self.address, self.port)
            note("*", code, text)
            if code != 220:
                return self._session_failed(m, rcpts, code, text, final)
            code, text = s.ehlo(self.helo)
            if code != 250:
                note("*", code, text)
                return self._session_failed(m, rcpts, code, text, final)
            code, text = s.mail(m.sender)
            note("*", code, text)
            if code != 250:
                return self._session_failed(m, rcpts, code, text, final)
            accepted = []
            for r in rcpts:
                code, text = s.rcpt(r)
                text = note(r, code, text)
                if 200 <= code < 300:
                    accepted.append(r)
                elif code >= 500:
                    final([r], "rejected", code, text)
                # 4xx: stays pending
            if not accepted:
                s.rset()
                s.quit()
                return
            code, text = s.data(m.data.encode("utf-8"))
            text = note("*", code, text)
            if 200 <= code < 300:
                final(accepted, "accepted", code, text)
            elif code >= 500:
                final(accepted, "rejected", code, text)
            s.quit()
        except smtplib.SMTPDataError as e:
            text = note("*", e.smtp_code, e.smtp_error)
            if e.smtp_code >= 500:
                final([r for r in rcpts if m.outcome[r][0] == "pending"], "rejected",
                      e.smtp_code, text)
        except (smtplib.SMTPException, OSError, socket.timeout) as e:
            note("*", None, "%s: %s" % (type(e).__name__, e))    # stays pending: retried
        finally:
            if s is not None:
                s.close()

    @staticmethod
    def _session_failed(m, rcpts, code, text, final):
        if code is not None and code >= 500:
            final(rcpts, "rejected", code, text.decode("utf-8", "replace")
                  if isinstance(text, bytes) else text)


def tally(messages):
    """{"sent": recipients handed to the server, "accepted", "rejected", "pending",
    "deferred at least once"} over messages."""
    t = {"sent": 0, "accepted": 0, "rejected": 0, "pending": 0, "deferred_at_rcpt": 0}
    for m in messages:
        for r, o in m.outcome.items():
            t["sent"] += 1
            t[o[0]] += 1
            if r in m.first_temp:
                t["deferred_at_rcpt"] += 1
    return t
