/* container — which container a process is in, as the runtimes name it.
 *
 * The id comes from the process's cgroup (<proc>/PID/cgroup), where every runtime puts a 64-hex id in
 * the path: "docker-ID.scope" or "/docker/ID" (Docker), "libpod-ID" (Podman), "cri-containerd-ID" and
 * "crio-ID" (Kubernetes), ".../kubepods/.../ID".  The name, when the runtime's state on disk says it:
 * Docker's <data-root>/containers/ID/config.v2.json ("/var/lib/docker", and the --data-root of each
 * running dockerd), Podman's containers.json, containerd's task bundle (the CRI container name).
 */
#pragma once
#include <glib.h>
#include <sys/types.h>

typedef struct {
  char id[65];        /* the full id, "" when the process is in no container we recognise */
  char runtime[16];   /* "docker", "podman", "containerd", "cri-o", "kubernetes" */
  char *name;         /* NULL when the runtime's state does not say it */
} UdsContainer;

/* Fills c from pid's cgroup.  FALSE (c->id "") when pid is in no container. */
gboolean uds_container_of(const char *proc_root, pid_t pid, UdsContainer *c);
void uds_container_clear(UdsContainer *c);
/* "name" or the short id (12 characters, as `docker ps` shows it). */
const char *uds_container_label(const UdsContainer *c, char shortid[13]);
