/* SPDX-License-Identifier: BSD-2-Clause */
/* log.h - one place where mailhostd writes log lines.
 *
 * Lines go to syslog (facility from the config) or to stderr, one write per line so that
 * lines from several threads never interleave.  All functions are thread-safe once
 * mh_log_open() has returned; mh_log_open() itself is called once from main().
 *
 * Nothing here ever receives a password.  Every value that came from the network or from the
 * directory (logins, DNs, routing values, sync cookies and OIDs, libmicrohttpd's messages) is
 * passed through mh_log_safe(), the one escaping helper, and written inside double quotes:
 * control bytes, non-ASCII bytes, '"', '\\' and '=' are shown as \xHH, so a value can neither
 * end its line nor forge a key=value field.  As a last guard mh_log() itself turns any control
 * byte left in a formatted line into '?': no caller can split a line, even by mistake.
 */
#ifndef MH_LOG_H
#define MH_LOG_H

#include <stddef.h>
#include <syslog.h>

enum mh_log_target { MH_LOG_STDERR, MH_LOG_SYSLOG };

/* Levels are syslog's: LOG_ERR, LOG_WARNING, LOG_NOTICE, LOG_INFO, LOG_DEBUG. */
void mh_log_open(const char *ident, enum mh_log_target target, int facility);
void mh_log_set_level(int level);
int mh_log_get_level(void);
void mh_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Copies s[0..len) into buf as printable ASCII: bytes outside 0x21..0x7e and the
 * characters '\\', '"' and '=' become \xHH.  Always NUL-terminates; marks truncation
 * with "...".  Returns buf.  The caller owns buf. */
const char *mh_log_safe(char *buf, size_t size, const char *s, size_t len);

/* Parses "err", "warning", "notice", "info", "debug"; -1 if unknown. */
int mh_log_level_from_name(const char *name);
/* The names of a level and a facility, as the parsers above take them. */
const char *mh_log_level_name(int level);
const char *mh_log_facility_name(int facility);

/* Parses a syslog facility name ("mail", "daemon", "local0".."local7"); -1 if unknown. */
int mh_log_facility_from_name(const char *name);

#endif
