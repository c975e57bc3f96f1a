/* perm-watch — watches every socket file in a folder as fast as it can, for test_security.py.
 *
 *   perm-watch FOLDER BASE MODE UID GID
 *
 * MODE/UID/GID are the original socket's (octal mode).  In a tight loop it lstat()s BASE and every
 * socket in FOLDER (a relay under its temporary name is reachable by anyone who can guess the name) and
 * checks that no observed socket lets in someone the original would not:
 *   - anyone:   others' write bit set where the original has none;
 *   - a group:  group write bit set for a group other than the original's (unless the original lets
 *               everyone in), or where the original denies its own group;
 *   - a user:   owner write bit set for an owner other than the original's and other than root (who
 *               passes permission checks anyway), unless the original lets everyone in.
 * Prints "ready" after the first pass; runs until stdin closes, then prints
 * "observations=N sockets_seen=S foreign=F violations=V", F counting observations of a socket other
 * than the one at BASE at start (the relay), then one line per violation (at most 20).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static unsigned orig_mode;
static uid_t orig_uid;
static gid_t orig_gid;

static const char *more_permissive(const struct stat *st)
{
  unsigned m = st->st_mode & 07777;
  if ((m & 0002) && !(orig_mode & 0002))
    return "others may connect";
  if (orig_mode & 0002)
    return NULL;   /* the original lets everyone in: nothing can be more permissive */
  if ((m & 0020) && (st->st_gid != orig_gid || !(orig_mode & 0020)))
    return "a group may connect that could not";
  if ((m & 0200) && st->st_uid != orig_uid && st->st_uid != 0)
    return "a user may connect that could not";
  return NULL;
}

int main(int argc, char **argv)
{
  if (argc != 6) {
    fprintf(stderr, "usage: perm-watch FOLDER BASE MODE UID GID\n");
    return 2;
  }
  const char *base = argv[2];
  orig_mode = (unsigned)strtoul(argv[3], NULL, 8);
  orig_uid = (uid_t)strtoul(argv[4], NULL, 10);
  orig_gid = (gid_t)strtoul(argv[5], NULL, 10);
  int dfd = open(argv[1], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) {
    perror("perm-watch");
    return 1;
  }
  struct stat first;
  if (fstatat(dfd, base, &first, AT_SYMLINK_NOFOLLOW) < 0) {
    perror("perm-watch: base");
    return 1;
  }
  unsigned long obs = 0, foreign = 0, violations = 0, passes = 0;
  ino_t seen[4096];
  unsigned nseen = 0;
  char report[20][400];   /* a name (<= 255) and the reason */
  struct pollfd pf = { .fd = 0, .events = POLLIN };
  for (;;) {
    DIR *d = fdopendir(dup(dfd));
    if (!d)
      break;
    rewinddir(d);
    struct dirent *de;
    while ((de = readdir(d))) {
      if (de->d_type != DT_SOCK && de->d_type != DT_UNKNOWN)
        continue;
      struct stat st;
      if (fstatat(dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISSOCK(st.st_mode))
        continue;
      obs++;
      if (st.st_ino != first.st_ino) {
        foreign++;
        unsigned i;
        for (i = 0; i < nseen && seen[i] != st.st_ino; i++)
          ;
        if (i == nseen && nseen < 4096)
          seen[nseen++] = st.st_ino;
      }
      const char *why = more_permissive(&st);
      if (why) {
        if (violations < 20)
          snprintf(report[violations], sizeof report[0], "%s: mode %04o uid %u gid %u: %s", de->d_name,
                   (unsigned)(st.st_mode & 07777), (unsigned)st.st_uid, (unsigned)st.st_gid, why);
        violations++;
      }
    }
    closedir(d);
    /* BASE again on its own, between directory passes: the swap itself happens at that name */
    for (int k = 0; k < 64; k++) {
      struct stat st;
      if (fstatat(dfd, base, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISSOCK(st.st_mode)) {
        obs++;
        const char *why = more_permissive(&st);
        if (why) {
          if (violations < 20)
            snprintf(report[violations], sizeof report[0], "%s: mode %04o uid %u gid %u: %s", base,
                     (unsigned)(st.st_mode & 07777), (unsigned)st.st_uid, (unsigned)st.st_gid, why);
          violations++;
        }
      }
    }
    if (++passes == 1) {
      printf("ready\n");
      fflush(stdout);
    }
    if ((passes & 63) == 0 && poll(&pf, 1, 0) > 0)
      break;   /* stdin closed (or written): stop */
  }
  printf("observations=%lu sockets_seen=%u foreign=%lu violations=%lu\n", obs, nseen, foreign, violations);
  for (unsigned long i = 0; i < violations && i < 20; i++)
    printf("%s\n", report[i]);
  return 0;
}
