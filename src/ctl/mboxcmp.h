/* SPDX-License-Identifier: BSD-2-Clause */
/* mboxcmp.h - what migrate's verify step compares: a user's mailboxes as Dovecot's doveadm
 * reports them on one server, and the first difference between two servers.
 *
 * The input is doveadm's tab format (-f tab: a header line naming the columns, then one
 * row per folder or message, fields separated by tabs):
 *   doveadm -f tab mailbox status -u USER 'messages uidvalidity uidnext vsize' '*'
 *   doveadm -f tab fetch -u USER 'mailbox uid flags size.virtual pop3.uidl' all
 * Columns are found by their names (doveadm orders them its own way); output without even
 * the header line is an error (doveadm prints the header for no rows too).  Compared per
 * folder: message count, UIDVALIDITY, UIDNEXT and vsize (the sum of the messages' sizes
 * with CRLF line ends); per message (folder and UID): the flags (as a set; \Recent is left
 * out: it belongs to a session, not to the message), the virtual size and the POP3 UIDL
 * that doveadm reports.  An old side without folders or without INBOX never compares
 * equal: it means doveadm looked at the wrong server or user.  The same UID set in INBOX
 * with the same UIDVALIDITY is the same POP3 UIDL list in the same order for Dovecot's
 * default pop3_uidl_format (%08Xu%08Xv).
 *
 * Pure: no I/O, no global state; a struct mh_mbox belongs to one thread at a time.  Its
 * memory is owned by it (mh_mbox_free).
 */
#ifndef MH_MBOXCMP_H
#define MH_MBOXCMP_H

#include <stddef.h>

struct mh_mbox_item {
    char *key;      /* "F\t<folder>" or "M\t<folder>\t<uid, 10 digits>" */
    char *rest;     /* what must be equal: counts, UIDVALIDITY... or flags and UIDL */
};

struct mh_mbox {
    struct mh_mbox_item *items;
    size_t n, cap;
    size_t folders;
    int inbox;                      /* a folder INBOX was reported */
    unsigned long long messages;    /* sum of the folders' message counts */
    unsigned long long bytes;       /* sum of vsize, when reported */
    unsigned long long uidls;       /* messages with a POP3 UIDL that doveadm reported (it
                                     * reports only those saved with the message) */
    unsigned long long inbox_messages;   /* INBOX's message count (POP3's view) */
    int used;                       /* some folder has messages, or a UIDNEXT above 1 */
    char used_why[300];             /* which folder, and what it holds */
};

/* Adds the rows of doveadm's tab output; 0, or -1 with the reason in err (a missing
 * column, a row with the wrong number of fields, a number that is not one, out of
 * memory). */
int mh_mbox_parse_status(struct mh_mbox *m, const char *text, char *err, size_t errsize);
int mh_mbox_parse_fetch(struct mh_mbox *m, const char *text, char *err, size_t errsize);

/* 0 if old and new hold the same; 1 with the first difference (or "the old server reports
 * no folders / no INBOX") in words in diff ("folder
 * \"X\" UID 7: missing on the new server", ...); -1 when out of memory.  Sorts both. */
int mh_mbox_compare(struct mh_mbox *old_side, struct mh_mbox *new_side, char *diff,
                    size_t size);

/* The rollback's guard: whether the old server holds mail that making it a copy of the
 * new one (dsync backup) would destroy.  The input is doveadm's tab output on each side:
 *   doveadm -f tab mailbox status -u USER 'messages uidvalidity uidnext' '*'
 *   doveadm -f tab fetch -u USER 'mailbox uid size.virtual date.received hdr.message-id' all
 * migrate's dsync copy keeps UIDs and UIDVALIDITY, so a message on both sides has the same
 * UID in the same folder.  1 with the reason in why when, in some folder of the old side,
 * the new side has no such folder while the old one holds messages, another UIDVALIDITY,
 * a lower UIDNEXT (mail arrived on the old side after the move), or another message
 * (size, INTERNALDATE or Message-ID) under the same UID, or when the new side has a message
 * under a UID the old folder has used (below its UIDNEXT, expunged there: dsync cannot add
 * it with its UID and would re-create the old folder); 0 otherwise, with *dropped the
 * old messages whose UID the new folder no longer has (deleted on the new server since
 * the move: the rollback removes them from the old one); -1 with the reason in why when
 * the output cannot be parsed or memory runs out. */
int mh_mbox_old_only(const char *old_status, const char *old_fetch, const char *new_status,
                     const char *new_fetch, unsigned long long *dropped, char *why,
                     size_t size);

void mh_mbox_free(struct mh_mbox *m);

#endif
