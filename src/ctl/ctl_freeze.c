/* SPDX-License-Identifier: BSD-2-Clause */
/* ctl_freeze.c - freeze and unfreeze USERS: set's machinery (plan, journal, assertion, undo,
 * resume; ctl_set.c) changing the migration state only. */
#include "config.h"
#include "ctl.h"

#include <stdio.h>
#include <strings.h>

int mh_ctl_cmd_freeze(struct mh_ctl *c, char **args, int nargs)
{
    if (c->state_opt && mh_user_state_parse(c->state_opt) != MH_STATE_FROZEN) {
        fprintf(stderr, "%s: freeze sets the state frozen; --state is for unfreeze\n",
                MH_CTL_PROG);
        return MH_EXIT_USAGE;
    }
    c->state_only = 1;
    c->state = "frozen";
    return mh_ctl_cmd_set(c, args, nargs);
}

int mh_ctl_cmd_unfreeze(struct mh_ctl *c, char **args, int nargs)
{
    if (c->state_opt && mh_user_state_parse(c->state_opt) == MH_STATE_FROZEN) {
        fprintf(stderr, "%s: unfreeze --state frozen changes nothing\n", MH_CTL_PROG);
        return MH_EXIT_USAGE;
    }
    c->state_only = 2;   /* c->state: --state, default done */
    return mh_ctl_cmd_set(c, args, nargs);
}
