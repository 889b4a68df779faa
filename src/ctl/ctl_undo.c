/* SPDX-License-Identifier: BSD-2-Clause */
/* ctl_undo.c - undo FILE: apply an undo LDIF written by set, freeze or unfreeze. */
#include "config.h"
#include "ctl.h"

#include <errno.h>
#include <stdio.h>   /* before ldif.h, which uses FILE */
#include <ldif.h>
#include <string.h>

int mh_ctl_cmd_undo(struct mh_ctl *c, char **args, int nargs)
{
    if (nargs != 1) {
        fprintf(stderr, "%s: undo takes one FILE (an undo LDIF written by set)\n", MH_CTL_PROG);
        return MH_EXIT_USAGE;
    }
    LDIFFP *fp = ldif_open(args[0], "r");
    if (fp == NULL) {
        fprintf(stderr, "%s: %s: %s\n", MH_CTL_PROG, args[0], strerror(errno));
        return MH_EXIT_USAGE;
    }
    char *buf = NULL;
    int buflen = 0, status = MH_EXIT_OK;
    unsigned long lineno = 0;
    size_t done = 0, skipped = 0, failed = 0;
    while (ldif_read_record(fp, &lineno, &buf, &buflen) > 0) {
        LDIFRecord lr;
        if (buf == NULL) {   /* libldap may say "a record" and give none (found by fuzzing) */
            fprintf(stderr, "%s: %s:%lu: not a valid LDIF record\n", MH_CTL_PROG, args[0], lineno);
            status = MH_EXIT_USAGE;
            break;
        }
        struct berval rbuf = { strlen(buf), buf };
        int bad = ldap_parse_ldif_record(&rbuf, lineno, &lr, MH_CTL_PROG, 0) != 0;
        if (!bad && (lr.lr_dn.bv_val == NULL || lr.lr_dn.bv_len == 0)) {
            ldap_ldif_record_done(&lr);
            bad = 1;
        }
        if (bad) {
            fprintf(stderr, "%s: %s:%lu: not a valid LDIF record\n", MH_CTL_PROG, args[0], lineno);
            status = MH_EXIT_USAGE;
            break;
        }
        if (lr.lr_op != LDAP_REQ_MODIFY) {
            fprintf(stderr, "%s: %s:%lu: only modify records are applied\n", MH_CTL_PROG, args[0],
                    lineno);
            ldap_ldif_record_done(&lr);
            failed++;
            continue;
        }
        if (c->cli.dry_run) {
            printf("would undo %s\n", lr.lr_dn.bv_val);
            ldap_ldif_record_done(&lr);
            done++;
            continue;
        }
        int rc = ldap_modify_ext_s(c->cli.ld, lr.lr_dn.bv_val, lr.lrop_mods, lr.lr_ctrls, NULL);
        if (rc == LDAP_SUCCESS) {
            done++;
        } else if (rc == LDAP_ASSERTION_FAILED) {
            skipped++;
            fprintf(stderr, "%s: %s: changed since the run: left alone\n", MH_CTL_PROG,
                    lr.lr_dn.bv_val);
        } else {
            mh_cli_perror(c->cli.ld, MH_CTL_PROG, "undoing", lr.lr_dn.bv_val, rc, NULL);
            failed++;
            if (mh_cli_unreachable(rc)) {
                ldap_ldif_record_done(&lr);
                status = MH_EXIT_UNREACHABLE;
                break;
            }
        }
        ldap_ldif_record_done(&lr);
    }
    ber_memfree(buf);
    ldif_close(fp);
    fprintf(stderr, "%s: undo: %zu %s, %zu skipped, %zu failed\n", MH_CTL_PROG, done,
            c->cli.dry_run ? "would be restored (dry run)" : "restored", skipped, failed);
    if (status == MH_EXIT_OK && done + skipped + failed == 0)
        fprintf(stderr, "%s: warning: %s holds no change to undo (a run that changed nothing; "
                "a repeated identical run keeps the earlier run's undo file as "
                "JOURNAL.<time>Z.undo.ldif)\n", MH_CTL_PROG, args[0]);
    if (status == MH_EXIT_OK && (skipped || failed))
        status = MH_EXIT_PARTIAL;
    return status;
}
