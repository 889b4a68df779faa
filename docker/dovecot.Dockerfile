# The two mail backends of the demo, OLD and NEW, in one image (Debian 12's Dovecot, IMAP and
# POP3), plus the tests' SMTP sink (tests/e2e/stack.py's SmtpSink) for their SMTP side.
#
#   docker build -f docker/dovecot.Dockerfile -t mailhostd-dovecot .   # from the repository top
#   docker run ... mailhostd-dovecot                          # OLD (the default command)
#   docker run ... mailhostd-dovecot dovecot -F -c /srv/dovecot/new/dovecot.conf      # NEW
#   docker run ... mailhostd-dovecot python3 /opt/mailhostd/docker/smtp-sink.py OLD
#
# /srv/dovecot/old and /srv/dovecot/new are docker/generated/dovecot/{old,new}: dovecot.conf
# (from tests/e2e/templates/dovecot.conf.in), passwd (the sample directory's passwords)
# and one message per mailbox (tests/e2e/templates/message.eml.in), whose Subject says
# "on OLD" or "on NEW".  OLD knows bare local parts (alice), NEW full addresses
# (alice@example.com), as mailhostd's map (login=localpart) and the tests expect.

FROM debian:12-slim
# policy-rc.d: the packages' postinst scripts start no system Dovecot in the build
RUN printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 0755 /usr/sbin/policy-rc.d \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        dovecot-imapd dovecot-pop3d dovecot-lmtpd python3 \
 && rm -rf /var/lib/apt/lists/* /usr/sbin/policy-rc.d \
 && groupadd --gid 5000 vmail \
 && useradd --uid 5000 --gid vmail --home-dir /srv/dovecot --no-create-home \
        --no-log-init --shell /usr/sbin/nologin vmail

COPY docker/generated/dovecot/ /srv/dovecot/
# each message as the one file of its mailbox; logs (log_path = <dir>/dovecot.log) go to
# the container's stderr
RUN set -e; \
    for side in old new; do \
        d=/srv/dovecot/$side; \
        for f in "$d"/mail/*.eml; do \
            login=$(basename "$f" .eml); \
            mkdir -p "$d/home/$login/Maildir/cur" "$d/home/$login/Maildir/new" \
                     "$d/home/$login/Maildir/tmp"; \
            cp "$f" "$d/home/$login/Maildir/cur/1763899200.M1P1.e2e:2,"; \
        done; \
        rm -r "$d/mail"; \
        chown -R vmail:vmail "$d/home"; \
        chmod 0644 "$d/passwd"; \
        ln -s /dev/stderr "$d/dovecot.log"; \
        dovecot -n -c "$d/dovecot.conf" >/dev/null; \
    done

# the SMTP sink: the tests' own class; stack.py imports tests/lib/{mhtest,slapd}.py
COPY tests/e2e/stack.py /opt/mailhostd/tests/e2e/
COPY tests/lib/mhtest.py tests/lib/slapd.py /opt/mailhostd/tests/lib/
COPY docker/smtp-sink.py /opt/mailhostd/docker/

EXPOSE 143 110 2525 24
# Dovecot greets on IMAP (OLD and NEW both listen on 143 in their own container)
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/143 && read -r -t 3 l <&3 && [[ $l == '* OK'* ]]"]
CMD ["dovecot", "-F", "-c", "/srv/dovecot/old/dovecot.conf"]
