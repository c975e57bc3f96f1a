/* symlink-racer — an adversary in the socket's folder, for test_badinput.py.
 *
 *   symlink-racer FOLDER BASE VICTIM temp|all
 *
 * Watches FOLDER with inotify and, the moment any new name appears (a relay's temporary name, and with
 * "all" the backup name too; never BASE itself), renames a fresh symlink to VICTIM over it.  A tool
 * that set owner or mode through a name, or bound, linked or renamed without checking what the name
 * now is, would then write VICTIM or put the symlink at PATH.  Prints "ready" once watching; runs until
 * stdin closes, then prints "events=N swaps=M".  The folder's symlinks it made are left for the test
 * to see.  Plain C: reacting in microseconds is the point.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <unistd.h>

#define STAGE_PREFIX ".racer-"

int main(int argc, char **argv)
{
  if (argc != 5) {
    fprintf(stderr, "usage: symlink-racer FOLDER BASE VICTIM temp|all\n");
    return 2;
  }
  const char *folder = argv[1], *base = argv[2], *victim = argv[3];
  int all = strcmp(argv[4], "all") == 0;
  char backup[NAME_MAX + 1];
  snprintf(backup, sizeof backup, ".%s.udsdump-orig", base);
  int dfd = open(folder, O_PATH | O_DIRECTORY | O_CLOEXEC);
  int ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (dfd < 0 || ifd < 0 || inotify_add_watch(ifd, folder, IN_CREATE | IN_MOVED_TO | IN_MOVED_FROM) < 0) {
    perror("symlink-racer: setup");
    return 1;
  }
  printf("ready\n");
  fflush(stdout);
  unsigned long events = 0, swaps = 0, seq = 0;
  uint32_t own_cookie = 0;   /* the rename of our own staging symlink: its arrival is not a new name */
  char buf[64 * 1024] __attribute__((aligned(__alignof__(struct inotify_event))));
  struct pollfd pf[2] = { { .fd = ifd, .events = POLLIN }, { .fd = 0, .events = POLLIN } };
  for (;;) {
    if (poll(pf, 2, -1) < 0 && errno != EINTR)
      break;
    if (pf[1].revents) {
      char c;
      if (read(0, &c, 1) <= 0)
        break;
    }
    if (!(pf[0].revents & POLLIN))
      continue;
    ssize_t n = read(ifd, buf, sizeof buf);
    for (ssize_t off = 0; n > 0 && off < n;) {
      const struct inotify_event *ev = (const struct inotify_event *)(buf + off);
      off += (ssize_t)sizeof *ev + ev->len;
      if (!ev->len)
        continue;
      if (strncmp(ev->name, STAGE_PREFIX, strlen(STAGE_PREFIX)) == 0) {
        if (ev->mask & IN_MOVED_FROM)
          own_cookie = ev->cookie;
        continue;
      }
      if ((ev->mask & IN_MOVED_FROM) || ((ev->mask & IN_MOVED_TO) && ev->cookie == own_cookie))
        continue;
      if (strcmp(ev->name, base) == 0)
        continue;
      if (!all && strcmp(ev->name, backup) == 0)
        continue;
      events++;
      char stage[64];
      snprintf(stage, sizeof stage, STAGE_PREFIX "%lu", seq++);
      if (symlinkat(victim, dfd, stage) < 0)
        continue;
      if (renameat(dfd, stage, dfd, ev->name) == 0)
        swaps++;
      else
        unlinkat(dfd, stage, 0);
    }
  }
  printf("events=%lu swaps=%lu\n", events, swaps);
  return 0;
}
