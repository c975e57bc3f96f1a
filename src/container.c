/* container — which container a process is in (see include/container.h).
 *
 * Only files are read, never a runtime's API: listing must not wait on a daemon, and must work when
 * the daemon is the thing being debugged.  The state files are JSON; rather than depend on a JSON
 * library for one string, the name is taken from a key that appears once per container in them
 * ("Name":"/..." in Docker's config.v2.json, whose names always start with '/'; "names":["..."] after
 * the id in Podman's containers.json; the CRI annotation in containerd's config.json).  A value with
 * an escape in it is not trusted and the id is shown instead.
 */
#include "container.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define STATE_MAX (4 * 1024 * 1024)

static gboolean is_hex64(const char *p)
{
  for (int i = 0; i < 64; i++)
    if (!g_ascii_isxdigit(p[i]) || g_ascii_isupper(p[i]))
      return FALSE;
  return !g_ascii_isxdigit(p[64]);
}

/* The runtime that names its cgroup with the text just before the id. */
static const char *runtime_of(const char *line, const char *id)
{
  static const struct {
    const char *tag, *runtime;
  } tags[] = {
    { "cri-containerd-", "containerd" }, { "crio-", "cri-o" }, { "libpod-", "podman" },
    { "docker-", "docker" }, { "/docker/", "docker" }, { "/kubepods", "kubernetes" },
    { "/containerd/", "containerd" },
  };
  for (gsize i = 0; i < G_N_ELEMENTS(tags); i++) {
    const char *t = g_strstr_len(line, id - line, tags[i].tag);
    if (t)
      return tags[i].runtime;
  }
  return NULL;
}

static char *read_small(const char *path, gsize max)
{
  g_autofree char *text = NULL;
  gsize len = 0;
  if (!g_file_get_contents(path, &text, &len, NULL) || len > max)
    return NULL;
  return g_steal_pointer(&text);
}

/* The JSON string value starting at p (just past its opening quote), when it has no escapes. */
static char *json_plain_string(const char *p)
{
  const char *e = p;
  while (*e && *e != '"' && *e != '\\' && (guchar)*e >= 0x20)
    e++;
  if (*e != '"' || e == p || e - p > 255)
    return NULL;
  return g_strndup(p, (gsize)(e - p));
}

/* The --data-root (or -g) of every running dockerd, besides the default. */
static GPtrArray *docker_roots(const char *proc_root)
{
  GPtrArray *roots = g_ptr_array_new_with_free_func(g_free);
  g_ptr_array_add(roots, g_strdup("/var/lib/docker"));
  DIR *d = opendir(proc_root);
  if (!d)
    return roots;
  struct dirent *de;
  while ((de = readdir(d))) {
    if (de->d_name[0] < '1' || de->d_name[0] > '9')
      continue;
    g_autofree char *comm_path = g_strdup_printf("%s/%s/comm", proc_root, de->d_name);
    g_autofree char *comm = read_small(comm_path, 64);
    if (!comm || strcmp(g_strchomp(comm), "dockerd") != 0)
      continue;
    g_autofree char *cmd_path = g_strdup_printf("%s/%s/cmdline", proc_root, de->d_name);
    gsize len = 0;
    g_autofree char *cmd = NULL;
    if (!g_file_get_contents(cmd_path, &cmd, &len, NULL))
      continue;
    for (const char *a = cmd; a < cmd + len; a += strlen(a) + 1) {
      const char *next = a + strlen(a) + 1;
      if (g_str_has_prefix(a, "--data-root="))
        g_ptr_array_add(roots, g_strdup(a + strlen("--data-root=")));
      else if ((strcmp(a, "--data-root") == 0 || strcmp(a, "-g") == 0) && next < cmd + len)
        g_ptr_array_add(roots, g_strdup(next));
    }
  }
  closedir(d);
  return roots;
}

static char *docker_name(const char *proc_root, const char *id)
{
  g_autoptr(GPtrArray) roots = docker_roots(proc_root);
  for (guint i = 0; i < roots->len; i++) {
    g_autofree char *path = g_strdup_printf("%s/containers/%s/config.v2.json", (char *)roots->pdata[i], id);
    g_autofree char *json = read_small(path, STATE_MAX);
    const char *k = json ? strstr(json, "\"Name\":\"/") : NULL;
    if (k)
      return json_plain_string(k + strlen("\"Name\":\"/"));
  }
  return NULL;
}

static char *podman_name(const char *id)
{
  static const char *const files[] = {
    "/var/lib/containers/storage/overlay-containers/containers.json",
    "/var/lib/containers/storage/vfs-containers/containers.json",
  };
  for (gsize i = 0; i < G_N_ELEMENTS(files); i++) {
    g_autofree char *json = read_small(files[i], STATE_MAX);
    g_autofree char *key = g_strdup_printf("\"id\":\"%s\"", id);
    const char *k = json ? strstr(json, key) : NULL;
    const char *n = k ? strstr(k, "\"names\":[\"") : NULL;
    const char *next = k ? strstr(k + 1, "\"id\":\"") : NULL;
    if (n && (!next || n < next))
      return json_plain_string(n + strlen("\"names\":[\""));
  }
  return NULL;
}

static char *cri_name(const char *id)
{
  static const char *const nss[] = { "k8s.io", "default", "moby" };
  for (gsize i = 0; i < G_N_ELEMENTS(nss); i++) {
    g_autofree char *path = g_strdup_printf("/run/containerd/io.containerd.runtime.v2.task/%s/%s/config.json", nss[i], id);
    g_autofree char *json = read_small(path, STATE_MAX);
    static const char key[] = "\"io.kubernetes.cri.container-name\":\"";
    const char *k = json ? strstr(json, key) : NULL;
    if (k)
      return json_plain_string(k + strlen(key));
  }
  return NULL;
}

gboolean uds_container_of(const char *proc_root, pid_t pid, UdsContainer *c)
{
  memset(c, 0, sizeof *c);
  char path[256];
  g_snprintf(path, sizeof path, "%s/%d/cgroup", proc_root, (int)pid);
  g_autofree char *text = read_small(path, 64 * 1024);
  if (!text)
    return FALSE;
  /* The innermost id of the first line that has one (cgroup v2 has one line; v1 repeats the path). */
  for (char *line = text; line && *line && !c->id[0];) {
    char *nl = strchr(line, '\n');
    if (nl)
      *nl = '\0';
    const char *found = NULL;
    for (const char *p = line; *p; p++)
      if ((p == line || !g_ascii_isxdigit(p[-1])) && is_hex64(p))
        found = p;
    const char *runtime = found ? runtime_of(line, found) : NULL;
    if (runtime) {
      memcpy(c->id, found, 64);
      g_strlcpy(c->runtime, runtime, sizeof c->runtime);
    }
    line = nl ? nl + 1 : NULL;
  }
  if (!c->id[0])
    return FALSE;
  if (strcmp(c->runtime, "docker") == 0)
    c->name = docker_name(proc_root, c->id);
  else if (strcmp(c->runtime, "podman") == 0)
    c->name = podman_name(c->id);
  else
    c->name = cri_name(c->id);
  return TRUE;
}

void uds_container_clear(UdsContainer *c)
{
  g_clear_pointer(&c->name, g_free);
  c->id[0] = '\0';
}

const char *uds_container_label(const UdsContainer *c, char shortid[13])
{
  if (c->name)
    return c->name;
  g_strlcpy(shortid, c->id, 13);
  return shortid;
}
