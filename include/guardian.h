/* guardian — internal to swap: the process that puts PATH back when the process holding the swap dies.
 *
 * Not a public module: only src/swap.c and the swap tests use it.  See src/guardian.c for the design.
 */
#pragma once
#include <glib.h>
#include <limits.h>
#include <sys/types.h>

#include "swap.h"

/* Where a swap lives: a descriptor of the folder (O_PATH) and the names in it.  The folder and the
 * names are fixed for the life of a swap; the temporary name and the inodes change with each
 * interposition (the server may re-create PATH and udsdump follow it). */
typedef struct {
  int dirfd;
  char base[NAME_MAX + 1];    /* PATH's last component */
  char backup[NAME_MAX + 1];  /* ".<base>.udsdump-orig": the original's second name while interposed */
} UdsSwapPlace;

typedef struct {
  dev_t dev;                  /* the folder's filesystem (all names live on it) */
  ino_t orig_ino;             /* the server's socket file; 0: nothing to put back */
  ino_t relay_ino;            /* udsdump's relay socket file; 0: not bound yet */
  char temp[NAME_MAX + 1];    /* the relay's temporary name, "" when none */
} UdsSwapState;

typedef enum {
  UDS_PUTBACK_NOTHING,      /* nothing of ours was there */
  UDS_PUTBACK_RESTORED,     /* PATH was the relay: the original is back at PATH */
  UDS_PUTBACK_LEFT_ALONE,   /* PATH is not the relay (server re-created it, or it is back already):
                               left as it is, only udsdump's leftovers removed */
  UDS_PUTBACK_FAILED,       /* PATH is the relay and the original could not be put back; errno says why */
} UdsPutBack;

/* Puts PATH back as described by state, and removes udsdump's leftovers (the backup name when it
 * is still the original, the temporary name when it is still the relay or the original).
 * Plain syscalls only: the guardian runs it in a forked child. */
UdsPutBack uds_swap_put_back(const UdsSwapPlace *place, const UdsSwapState *state);

/* Renames from over to, atomically, and only when `to` is still expect_ino: uses RENAME_EXCHANGE and
 * swaps back when something else arrived at `to` meanwhile (then returns -1 with errno EAGAIN);
 * afterwards removes what was at `to` (now under `from`).  Falls back to a checked rename() where the
 * filesystem cannot exchange.  0 on success. */
int uds_swap_replace(int dirfd, const char *from, ino_t from_ino, const char *to, dev_t dev, ino_t expect_ino);

/* Starts the guardian for place (double fork, own session, stdio on /dev/null, only its own fds).
 * Returns the relay's end of the control channel (close-on-exec) and the guardian's pid. */
int uds_guardian_start(const UdsSwapPlace *place, pid_t *guardian_pid, GError **error);
/* Tells the guardian what to put back if this process dies: a copy of state.  FALSE when the
 * guardian is gone (then nobody would restore: the caller must not interpose). */
gboolean uds_guardian_arm(int chan, const UdsSwapState *state);
/* Nothing to put back any more; the guardian exits.  The channel is closed. */
void uds_guardian_done(int chan);

/* For tests: the guardian's pid, 0 when none was started. */
pid_t uds_swap_guardian_pid(const UdsSwap *s);
