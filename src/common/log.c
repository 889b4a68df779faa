/* SPDX-License-Identifier: BSD-2-Clause */
/* log.c - see log.h. */
#include "config.h"
#include "log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static enum mh_log_target log_target = MH_LOG_STDERR;
static atomic_int log_level = LOG_INFO;
static const char *log_ident = "mailhostd";

static const struct { const char *name; int value; } level_names[] = {
    {"err", LOG_ERR}, {"error", LOG_ERR}, {"warning", LOG_WARNING}, {"notice", LOG_NOTICE},
    {"info", LOG_INFO}, {"debug", LOG_DEBUG},
};

static const struct { const char *name; int value; } facility_names[] = {
    {"mail", LOG_MAIL}, {"daemon", LOG_DAEMON}, {"auth", LOG_AUTH}, {"authpriv", LOG_AUTHPRIV},
    {"user", LOG_USER}, {"local0", LOG_LOCAL0}, {"local1", LOG_LOCAL1}, {"local2", LOG_LOCAL2},
    {"local3", LOG_LOCAL3}, {"local4", LOG_LOCAL4}, {"local5", LOG_LOCAL5},
    {"local6", LOG_LOCAL6}, {"local7", LOG_LOCAL7},
};

int mh_log_level_from_name(const char *name)
{
    for (size_t i = 0; i < sizeof level_names / sizeof level_names[0]; i++)
        if (strcasecmp(name, level_names[i].name) == 0)
            return level_names[i].value;
    return -1;
}

int mh_log_facility_from_name(const char *name)
{
    for (size_t i = 0; i < sizeof facility_names / sizeof facility_names[0]; i++)
        if (strcasecmp(name, facility_names[i].name) == 0)
            return facility_names[i].value;
    return -1;
}

const char *mh_log_level_name(int level)
{
    for (size_t i = 0; i < sizeof level_names / sizeof level_names[0]; i++)
        if (level_names[i].value == level)
            return level_names[i].name;
    return "info";
}

const char *mh_log_facility_name(int facility)
{
    for (size_t i = 0; i < sizeof facility_names / sizeof facility_names[0]; i++)
        if (facility_names[i].value == facility)
            return facility_names[i].name;
    return "mail";
}

void mh_log_open(const char *ident, enum mh_log_target target, int facility)
{
    log_ident = ident;
    log_target = target;
    if (target == MH_LOG_SYSLOG)
        openlog(ident, LOG_PID | LOG_NDELAY, facility);
}

void mh_log_set_level(int level) { atomic_store(&log_level, level); }
int mh_log_get_level(void) { return atomic_load(&log_level); }

static const char *level_word(int level)
{
    switch (level) {
    case LOG_EMERG: case LOG_ALERT: case LOG_CRIT: case LOG_ERR: return "error";
    case LOG_WARNING: return "warning";
    case LOG_NOTICE: return "notice";
    case LOG_INFO: return "info";
    default: return "debug";
    }
}

void mh_log(int level, const char *fmt, ...)
{
    char msg[2048];
    va_list ap;

    if (level > atomic_load(&log_level))
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    /* the last guard (see log.h): values are escaped by mh_log_safe before they get here */
    for (char *p = msg; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            *p = '?';

    if (log_target == MH_LOG_SYSLOG) {
        syslog(level, "%s", msg);
        return;
    }
    /* stderr: timestamp, ident, level; one write() so concurrent lines stay whole */
    char line[2200];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s[%ld]: %s: %s\n",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000L, log_ident, (long)getpid(),
                     level_word(level), msg);
    if (n < 0)
        return;
    if ((size_t)n >= sizeof line) {
        n = sizeof line - 1;
        line[n - 1] = '\n';
    }
    ssize_t w = write(STDERR_FILENO, line, (size_t)n);
    (void)w;
}

const char *mh_log_safe(char *buf, size_t size, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;

    if (size == 0)
        return buf;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        int plain = c > 0x20 && c < 0x7f && c != '\\' && c != '"' && c != '=';
        size_t need = plain ? 1 : 4;
        if (o + need + 4 > size) {  /* keep room for "..." and NUL */
            if (o + 4 <= size) {
                memcpy(buf + o, "...", 3);
                o += 3;
            }
            break;
        }
        if (plain) {
            buf[o++] = (char)c;
        } else {
            buf[o++] = '\\';
            buf[o++] = 'x';
            buf[o++] = hex[c >> 4];
            buf[o++] = hex[c & 15];
        }
    }
    buf[o] = '\0';
    return buf;
}
