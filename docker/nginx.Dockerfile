# nginx's mail proxy (Debian 12: nginx + libnginx-mod-mail), asking mailhostd where each
# IMAP, POP3 and SMTP login goes.
#
#   docker build -f docker/nginx.Dockerfile -t mailhostd-nginx .    # from the repository top
#
# The configuration is docker/generated/nginx/nginx.conf, rendered by docker/render.py from
# tests/e2e/templates/nginx.conf.in: every server block of the end-to-end test, each on its
# own port (docker/render.py, NGINX_PORTS).  docker/nginx-start puts the shared secret in
# and starts nginx.  The master runs as root, the workers as www-data in group mailhostd
# (gid 10143, as in the mailhostd image), which may use mailhostd's unix socket
# (/run/mailhostd/auth.sock, a volume shared with the mailhostd container).

FROM debian:12-slim
# policy-rc.d: the package's postinst starts no system nginx in the build
RUN printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 0755 /usr/sbin/policy-rc.d \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        nginx libnginx-mod-mail openssl \
 && rm -rf /var/lib/apt/lists/* /usr/sbin/policy-rc.d \
 && groupadd --gid 10143 mailhostd \
 && install -d -o 10143 -g 10143 -m 0750 /run/mailhostd \
 && install -d -m 0700 /var/lib/nginx-mail \
 && ln -s /dev/stderr /var/lib/nginx-mail/error.log

COPY docker/generated/nginx/nginx.conf /etc/nginx/mailhostd/nginx.conf
COPY docker/nginx-start /usr/local/sbin/nginx-start
RUN chmod 0755 /usr/local/sbin/nginx-start \
 && sed 's|@MAILHOSTD_AUTH_KEY@|build-time-check|' /etc/nginx/mailhostd/nginx.conf \
        >/tmp/nginx.conf \
 && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
        -subj /CN=check -keyout /var/lib/nginx-mail/key.pem \
        -out /var/lib/nginx-mail/cert.pem 2>/dev/null \
 && nginx -t -p /var/lib/nginx-mail -c /tmp/nginx.conf -e /dev/stderr \
 && rm /tmp/nginx.conf /var/lib/nginx-mail/key.pem /var/lib/nginx-mail/cert.pem

# the template's server blocks (docker/render.py NGINX_PORTS)
EXPOSE 1143 1110 2143 2110 1587 1025 3143 3110 4143 4110 4587 4025 5143
# nginx greets on IMAP
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/1143 && read -r -t 3 l <&3 && [[ $l == '* OK'* ]]"]
ENTRYPOINT ["/usr/local/sbin/nginx-start"]
