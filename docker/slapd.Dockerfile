# slapd (OpenLDAP, Debian 12) serving the sample directory: schema/ (with OpenLDAP's core,
# cosine, inetorgperson, misc), ldif/indexes.ldif, ldif/sample.ldif and ldif/acl.ldif.
#
#   docker build -f docker/slapd.Dockerfile -t mailhostd-slapd .    # from the repository top
#
# The directory is built at image build time by the tests' own harness (tests/lib/slapd.py,
# through docker/slapd-build.py), then copied into a stage without Python.  slapd runs as
# openldap; suffix dc=example,dc=org; the service accounts and users of ldif/README.md.
# cn=config, as root over ldapi:
#   ldapsearch -Q -Y EXTERNAL -H ldapi://%2Fvar%2Flib%2Fmailhostd-ldap%2Fldapi -b cn=config

# ---------------------------------------------------------------- build the directory
FROM debian:12-slim AS build
RUN echo "slapd slapd/no_configuration boolean true" | debconf-set-selections \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        slapd ldap-utils python3 \
 && rm -rf /var/lib/apt/lists/*
COPY schema/ /opt/mailhostd/schema/
COPY ldif/ /opt/mailhostd/ldif/
COPY tests/lib/slapd.py /opt/mailhostd/tests/lib/
COPY docker/slapd-build.py /opt/mailhostd/docker/
RUN python3 /opt/mailhostd/docker/slapd-build.py /opt/mailhostd /var/lib/mailhostd-ldap

# ---------------------------------------------------------------- runtime
FROM debian:12-slim AS slapd
# no_configuration: Debian's postinst makes no directory of its own
RUN echo "slapd slapd/no_configuration boolean true" | debconf-set-selections \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        slapd ldap-utils \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /var/lib/mailhostd-ldap/ /var/lib/mailhostd-ldap/
RUN chown -R openldap:openldap /var/lib/mailhostd-ldap \
 && chmod 0750 /var/lib/mailhostd-ldap
# The harness's layout: <workdir>/slapd.d (cn=config), <workdir>/db (mdb), the ldapi socket
# <workdir>/ldapi.  No VOLUME: a changed mailHost lasts as long as the container.
EXPOSE 389
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["ldapsearch", "-x", "-H", "ldap://127.0.0.1", "-o", "nettimeout=3", "-LLL", \
         "-s", "base", "-b", "", "(objectClass=*)", "1.1"]
# -d: in the foreground, log to stderr ("-d stats" logs every operation)
CMD ["slapd", "-d", "none", "-u", "openldap", "-g", "openldap", \
     "-F", "/var/lib/mailhostd-ldap/slapd.d", \
     "-h", "ldap:/// ldapi://%2Fvar%2Flib%2Fmailhostd-ldap%2Fldapi/"]
