/* SPDX-License-Identifier: BSD-2-Clause */
/* mailhostctl.c - the directory admin's side of a migration: options, usage and the table
 * of subcommands (each in its ctl_*.c; what they share in ctl.h).  Options in the OpenLDAP
 * tools' tradition (cli.h). */
#include "config.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ctl.h"

static void usage(FILE *fp)
{
    fprintf(fp,
        "Usage: mailhostctl [OPTIONS] COMMAND [ARGS]\n"
        "Directory tool for mailbox migrations behind mailhostd.\n"
        "\n"
        "Commands:\n"
        "  show USER                 entry, routing value, migration state and the backend\n"
        "                            mailhostd would choose for each protocol (with -c)\n"
        "  set HOST USER...          set the routing value of users to HOST\n"
        "  set HOST --file FILE      ... of the logins in FILE (one per line, # comments)\n"
        "  set HOST --filter FILTER  ... of the entries matching an LDAP filter\n"
        "  set HOST --domain DOMAIN  ... of the users whose mail is in DOMAIN\n"
        "  freeze USER...            set the migration state of users to frozen (also\n"
        "                            --file, --filter, --domain); waits out route_cache_ttl\n"
        "  unfreeze USER...          set frozen users' state to --state (default done)\n"
        "  undo FILE                 apply an undo LDIF written by set, freeze or unfreeze\n"
        "  stats                     users per routing value and per migration state; the\n"
        "                            pipeline: states in order, oldest claim, frozen-window\n"
        "                            p50/p99 (mailhostFrozenWindow)\n"
        "  list                      the users in --state STATE and/or on --host HOST (\"none\":\n"
        "                            without), one mail address a line (a --file for set)\n"
        "  migrate --to HOST USER... move users' mailboxes to HOST, then their routing value\n"
        "                            (also --file, --filter, --domain): claim, copy, freeze,\n"
        "                            kick, final sync,\n"
        "                            verify, flip; see migrate options\n"
        "  schema-check              is the directory's schema ready for mailhostd?\n"
        "  stragglers                who logged in lately, and through which backend (from\n"
        "                            mailhostd's state_file; no directory access needed)\n"
        "  postfix-config            the main.cf lines for mailhostd's socketmap (needs -c;\n"
        "                            no directory access), for the MX or --for BACKEND\n"
        "\n"
        "LDAP options (as ldapsearch; ldap.conf and ~/.ldaprc are read):\n"
        "  -H URI      directory URI(s)            -D DN       bind DN\n"
        "  -w PASS     bind password               -W          prompt for it\n"
        "  -y FILE     all of FILE (as ldapsearch) -Z / -ZZ    StartTLS (-ZZ: required)\n"
        "  -x          simple bind (the default)   -b BASE     search base\n"
        "  -c FILE     take URIs, base, filter, attributes and backends from a\n"
        "              mailhostd.conf (its secret files are not read)\n"
        "  -n          dry run: show what would change   -v  verbose\n"
        "\n"
        "set options:\n"
        "  --from HOST     change only entries whose routing value is HOST\n"
        "                  (every change asserts the value read when the run was planned,\n"
        "                  RFC 4528: a concurrent change is never overwritten)\n"
        "  --ldif          print the changes as LDIF for ldapmodify instead of applying them\n"
        "  --batch N       apply at most N changes in this run (re-run to continue)\n"
        "  --journal FILE  the run's journal (default: ./mailhostctl-<id>.journal); a re-run\n"
        "                  of the same command resumes it; FILE.undo.ldif undoes the run\n"
        "  --state STATE   migration state to record (default: done); frozen with -c waits\n"
        "                  out mailhostd's route_cache_ttl before returning\n"
        "  --no-track      do not record state, previous host and time of the move\n"
        "  --backends NAME[,NAME...]  the backend names mailhostd routes to; HOST must be\n"
        "                  one (with -c instead, HOST is checked against that file's\n"
        "                  backend map and route_unmapped)\n"
        "migrate options (--from, --file and --journal as for set):\n"
        "  --to HOST       the new routing value (required)\n"
        "  --old-doveadm CMD / --new-doveadm CMD  (required, different) doveadm reading\n"
        "                  each server, for the target check, the verify and the default\n"
        "                  kick (e.g. \"doveadm -c /etc/dovecot/old.conf\")\n"
        "  --copy-command T  the copier, run twice (default: doveadm backup -R -l 60 -u %%u\n"
        "                  imapc:, on the new server's side)\n"
        "  --kick-command T  ends the user's sessions on the old server (default: the\n"
        "                  --old-doveadm command + kick %%u; its exit 68 is accepted: no one\n"
        "                  was logged in on the old server)\n"
        "                  T: words split at spaces, run without a shell; %%u login, %%o old\n"
        "                  host, %%n new host, %%%% a percent sign; never a password\n"
        "  --target-not-empty=fail|overwrite  a used target mailbox fails the user\n"
        "                  (default), or is overwritten: made a copy of the source, mail\n"
        "                  only the target holds is DELETED\n"
        "  --timeout SECS  per command (default 3600)  --lease SECS  claim's lease, more\n"
        "                  than 2 x timeout (default 2 x timeout + 600); renewed before\n"
        "                  each step and every lease/3 while a command runs\n"
        "  --runner-id ID  (default HOSTNAME:<run id>; :PID:START@HOSTNAME is added;\n"
        "                  unique per machine: runs with one ID resume each other's users)\n"
        "  --retry-failed  also move users in state failed\n"
        "  --concurrency N  move N users at once (default 1, at most 32): N worker\n"
        "                  processes, each with its own directory connection\n"
        "  --retries N     run a failing copier or kick again up to N times (default 2,\n"
        "                  at most 10), pausing 5 s, then twice as long each time (at most\n"
        "                  60 s), before the user fails\n"
        "  --report FILE   append one JSON line per user: outcome, messages, bytes, copy\n"
        "                  and frozen times, UIDs/UIDVALIDITY/UIDLs kept (by the verify).\n"
        "                  With -v or on a terminal: progress and ETA on standard error.\n"
        "                  With -n: the users it would move and the commands it would run.\n"
        "  --follow        keep running: move the users in state queued (within --filter\n"
        "                  or --domain) as they come, and resume its own copying/frozen\n"
        "                  ones, searching every --poll SECS (default 30); an error other\n"
        "                  than an unreachable directory ends it (exit 1); SIGTERM: no new\n"
        "                  users, those not yet frozen stop (resumed by the restart), the\n"
        "                  frozen ones finish; again: they stop too\n"
        "  --mta-settle SECS  stay frozen this long before the final sync (default 35):\n"
        "                  Postfix reuses an address's last routing answer for up to 30 s,\n"
        "                  so mail may still reach the old server just after the freeze;\n"
        "                  0 where no MTA routes by the directory\n"
        "  --mailhostd URL[,URL...]  (repeatable) the status listener of every mailhostd\n"
        "                  routing these users (e.g. http://proxy1:8081): after the freeze\n"
        "                  each must have applied it (its /metrics applied_csn, mirror yes)\n"
        "                  before the kick, else the user fails, unfrozen on the old host;\n"
        "                  after the flip the same wait, a warning only (proxies N ms)\n"
        "  --mailhostd-wait SECS  how long each wait may take (default 30, 1-3600)\n"
        "migrate --rollback USER... (or --file): back to mailhostPreviousHost, mail first\n"
        "                  (users in state done): claim, copy new -> old, freeze, kick on\n"
        "                  the new server, final sync, verify, flip back, state rolledback;\n"
        "                  or refused with the reason.  Needs --old-doveadm, --new-doveadm\n"
        "                  (the old server must be Dovecot) and --copy-command: the copier\n"
        "                  that makes the OLD mailbox a copy of the new one.  --to (the\n"
        "                  previous host) and --from (the current one) only check.\n"
        "                  Refused, nothing changed, when the old mailbox holds mail the\n"
        "                  new one lacks (the copy would delete it).  A killed rollback's\n"
        "                  claim is taken over once its lease has ended.  To move a rolled\n"
        "                  back user again: --target-not-empty=overwrite (the new mailbox\n"
        "                  stays)\n"
        "stragglers options:\n"
        "  --since AGE     only logins newer than AGE: 90m, 36h, 7d (default 30d)\n"
        "  --host BACKEND  only logins routed to this backend (e.g. the old server)\n"
        "  --state-file FILE  mailhostd's state_file (default: state_file of -c)\n"
        "  --json          JSON output\n"
        "postfix-config options:\n"
        "  --for NAME      the lines for the Postfix on backend NAME (map transport@NAME)\n"
        "stats options:\n"
        "  --filter FILTER the users to count (default: (mail=*))   --json  JSON output\n"
        "\n"
        "Exit status: 0 done, 1 error, 2 usage, 3 partly done (some entries or users failed\n"
        "or were skipped), 4 directory unreachable (re-run the same command to finish).\n"
        "See mailhostctl(8).\n");
}


/* ---------- main ---------- */

static const struct command {
    const char *name;
    mh_ctl_cmd_fn *run;
    int directory;              /* connects to the directory first */
    int filter;                 /* takes --filter */
    /* usage checks run before -c is read (NULL: none): usage errors come first */
    int (*usage)(const struct mh_ctl *c, char **args, int nargs);
} commands[] = {
    { "show", mh_ctl_cmd_show, 1, 0, NULL },
    { "set", mh_ctl_cmd_set, 1, 1, NULL },
    { "undo", mh_ctl_cmd_undo, 1, 0, NULL },
    { "stats", mh_ctl_cmd_stats, 1, 1, NULL },
    { "schema-check", mh_ctl_cmd_schema_check, 1, 0, NULL },
    { "stragglers", mh_ctl_cmd_stragglers, 0, 0, NULL },   /* reads mailhostd's state file */
    { "postfix-config", mh_ctl_cmd_postfix_config, 0, 0, mh_ctl_postfix_usage },
    { "list", mh_ctl_cmd_list, 1, 1, NULL },
    { "freeze", mh_ctl_cmd_freeze, 1, 1, NULL },
    { "unfreeze", mh_ctl_cmd_unfreeze, 1, 1, NULL },
    { "migrate", mh_ctl_cmd_migrate, 1, 1, NULL },
};

/* A number from lo to hi for --name into *out: 0, or -1 with "--name takes WHAT (LO to HI)"
 * said on stderr. */
static int range_opt(const char *name, const char *arg, long lo, long hi, const char *what,
                     long *out)
{
    char *end;
    long v = strtol(arg, &end, 10);
    if (*end || end == arg || v < lo || v > hi) {
        fprintf(stderr, "%s: --%s takes %s (%ld to %ld)\n", MH_CTL_PROG, name, what, lo, hi);
        return -1;
    }
    *out = v;
    return 0;
}

/* Fills c from the options; returns -1 to go on (optind at the command), else the exit
 * status (--help, --version, a bad option). */
static int parse_options(struct mh_ctl *c, int argc, char **argv)
{
    static const struct option longopts[] = {
        {"file", required_argument, NULL, 'F'}, {"filter", required_argument, NULL, 'L'},
        {"domain", required_argument, NULL, 'O'}, {"from", required_argument, NULL, 'R'},
        {"ldif", no_argument, NULL, 'I'}, {"batch", required_argument, NULL, 'B'},
        {"journal", required_argument, NULL, 'J'}, {"json", no_argument, NULL, 'j'},
        {"state", required_argument, NULL, 'S'}, {"no-track", no_argument, NULL, 'T'},
        {"since", required_argument, NULL, 'G'}, {"host", required_argument, NULL, 'K'},
        {"state-file", required_argument, NULL, 'Q'}, {"backends", required_argument, NULL, 'N'},
        {"for", required_argument, NULL, 'P'},
        {"to", required_argument, NULL, 256}, {"copy-command", required_argument, NULL, 257},
        {"kick-command", required_argument, NULL, 258},
        {"old-doveadm", required_argument, NULL, 259},
        {"new-doveadm", required_argument, NULL, 260},
        {"target-not-empty", required_argument, NULL, 261},
        {"timeout", required_argument, NULL, 262}, {"lease", required_argument, NULL, 263},
        {"runner-id", required_argument, NULL, 264}, {"retry-failed", no_argument, NULL, 265},
        {"mta-settle", required_argument, NULL, 266},
        {"rollback", no_argument, NULL, 290},
        {"concurrency", required_argument, NULL, 267},
        {"retries", required_argument, NULL, 268},
        {"report", required_argument, NULL, 269},
        {"follow", no_argument, NULL, 270}, {"poll", required_argument, NULL, 271},
        {"mailhostd", required_argument, NULL, 272},
        {"mailhostd-wait", required_argument, NULL, 273},
        {"help", no_argument, NULL, 'h'}, {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    int opt;
    while ((opt = getopt_long(argc, argv, MH_CLI_OPTSTRING "hV", longopts, NULL)) != -1) {
        int r = mh_cli_option(&c->cli, opt, optarg);
        if (r < 0)
            return MH_EXIT_USAGE;
        if (r > 0)
            continue;
        switch (opt) {
        case 'F': c->file = optarg; break;
        case 'L': c->filter = optarg; break;
        case 'O': c->domain = optarg; break;
        case 'R': c->from = optarg; break;
        case 'I': c->ldif_out = 1; break;
        case 'B': {
            char *end;
            c->batch = strtol(optarg, &end, 10);
            if (*end || c->batch < 1) {
                fprintf(stderr, "%s: --batch takes a number of at least 1\n", MH_CTL_PROG);
                return MH_EXIT_USAGE;
            }
            break;
        }
        case 'J': c->journal = optarg; break;
        case 'j': c->json = 1; break;
        case 'S': c->state = c->state_opt = optarg; break;
        case 'T': c->no_track = 1; break;
        case 'G': c->since = optarg; break;
        case 'K': c->host = optarg; break;
        case 'Q': c->state_file = optarg; break;
        case 'N': c->backends = optarg; break;
        case 'P': c->for_backend = optarg; break;
        case 256: c->to = optarg; break;
        case 257: c->copy_cmd = optarg; break;
        case 258: c->kick_cmd = optarg; break;
        case 259: c->old_doveadm = optarg; break;
        case 260: c->new_doveadm = optarg; break;
        case 261:
            if (strcmp(optarg, "overwrite") != 0 && strcmp(optarg, "fail") != 0) {
                fprintf(stderr, "%s: --target-not-empty takes fail or overwrite\n",
                        MH_CTL_PROG);
                return MH_EXIT_USAGE;
            }
            c->target_overwrite = optarg[0] == 'o';
            break;
        case 262:
        case 263: {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (*end || v < 1 || v > 10L * 24 * 3600) {
                fprintf(stderr, "%s: --%s takes seconds (1 to 864000)\n", MH_CTL_PROG,
                        opt == 262 ? "timeout" : "lease");
                return MH_EXIT_USAGE;
            }
            *(opt == 262 ? &c->cmd_timeout : &c->lease) = v;
            break;
        }
        case 266:
            if (range_opt("mta-settle", optarg, 0, 3600, "seconds", &c->mta_settle) < 0)
                return MH_EXIT_USAGE;
            break;
        case 267:
            if (range_opt("concurrency", optarg, 1, MH_CTL_MAX_CONCURRENCY, "a number of users",
                          &c->concurrency) < 0)
                return MH_EXIT_USAGE;
            break;
        case 268:
            if (range_opt("retries", optarg, 0, 10, "a number", &c->retries) < 0)
                return MH_EXIT_USAGE;
            break;
        case 269: c->report_file = optarg; break;
        case 270: c->follow = 1; break;
        case 271:
            if (range_opt("poll", optarg, 1, 3600, "seconds", &c->poll) < 0)
                return MH_EXIT_USAGE;
            break;
        case 272:
            if (c->nmailhostd == MH_CTL_MAX_MAILHOSTD) {
                fprintf(stderr, "%s: --mailhostd: at most %d times (or give comma lists)\n",
                        MH_CTL_PROG, MH_CTL_MAX_MAILHOSTD);
                return MH_EXIT_USAGE;
            }
            c->mailhostd[c->nmailhostd++] = optarg;
            break;
        case 273:
            if (range_opt("mailhostd-wait", optarg, 1, 3600, "seconds", &c->mailhostd_wait) < 0)
                return MH_EXIT_USAGE;
            break;
        case 264: c->runner_id = optarg; break;
        case 265: c->retry_failed = 1; break;
        case 290: c->rollback = 1; break;
        case 'h': usage(stdout); return MH_EXIT_OK;
        case 'V': printf("mailhostctl %s\n", PACKAGE_VERSION); return MH_EXIT_OK;
        default: usage(stderr); return MH_EXIT_USAGE;
        }
    }
    return -1;
}

int main(int argc, char **argv)
{
    struct mh_ctl c;
    memset(&c, 0, sizeof c);
    c.state = "done";
    c.mta_settle = -1;
    c.retries = -1;
    const struct command *cmd = NULL;
    int status = parse_options(&c, argc, argv);
    if (status >= 0)
        goto out;
    if (optind >= argc) {
        usage(stderr);
        status = MH_EXIT_USAGE;
        goto out;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(argv[optind], commands[i].name) == 0)
            cmd = &commands[i];
    if (cmd == NULL) {
        fprintf(stderr, "%s: unknown command \"%s\"\n", MH_CTL_PROG, argv[optind]);
        usage(stderr);
        status = MH_EXIT_USAGE;
        goto out;
    }
    if (c.filter && !cmd->filter) {
        fprintf(stderr, "%s: --filter goes with set, freeze, unfreeze, stats, list or migrate\n",
                MH_CTL_PROG);
        status = MH_EXIT_USAGE;
        goto out;
    }
    if (c.rollback && cmd->run != mh_ctl_cmd_migrate) {
        fprintf(stderr, "%s: --rollback goes with migrate\n", MH_CTL_PROG);
        status = MH_EXIT_USAGE;
        goto out;
    }
    if ((c.nmailhostd || c.mailhostd_wait) && cmd->run != mh_ctl_cmd_migrate) {
        fprintf(stderr, "%s: --mailhostd and --mailhostd-wait go with migrate\n", MH_CTL_PROG);
        status = MH_EXIT_USAGE;
        goto out;
    }
    if (c.for_backend && cmd->run != mh_ctl_cmd_postfix_config) {
        fprintf(stderr, "%s: --for goes with postfix-config\n", MH_CTL_PROG);
        status = MH_EXIT_USAGE;
        goto out;
    }
    if (cmd->usage && (status = cmd->usage(&c, argv + optind + 1, argc - optind - 1)) != 0)
        goto out;
    if (mh_cli_setup(&c.cli, MH_CTL_PROG) < 0) {
        status = MH_EXIT_USAGE;
        goto out;
    }
    if (cmd->directory) {
        int rc = mh_cli_connect(&c.cli, MH_CTL_PROG);
        if (rc != LDAP_SUCCESS) {
            status = mh_cli_unreachable(rc) ? MH_EXIT_UNREACHABLE
                   : rc == LDAP_PARAM_ERROR ? MH_EXIT_USAGE : MH_EXIT_ERROR;
            goto out;
        }
    }
    status = cmd->run(&c, argv + optind + 1, argc - optind - 1);
out:
    mh_cli_free(&c.cli);
    return status;
}
