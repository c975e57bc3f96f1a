/* Tests for container: ids from the cgroup lines each runtime writes, names from the runtime's state
 * files, in a fixture proc root (a temp folder laid out as /proc and a Docker data root are). */
#include "container.h"

#include <glib/gstdio.h>
#include <string.h>

#define ID_A "4f2c0e8d1a9b3c7d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5"
#define ID_B "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

typedef struct {
  char *root;
} Fixture;

static void put(const char *root, const char *rel, const char *text, gssize len)
{
  g_autofree char *path = g_build_filename(root, rel, NULL);
  g_autofree char *dir = g_path_get_dirname(path);
  g_assert_cmpint(g_mkdir_with_parents(dir, 0755), ==, 0);
  g_assert_true(g_file_set_contents(path, text, len, NULL));
}

static void setup(Fixture *f, gconstpointer data)
{
  (void)data;
  f->root = g_dir_make_tmp("udsdump-container-XXXXXX", NULL);
  g_assert_nonnull(f->root);
  put(f->root, "100/cgroup", "0::/system.slice/docker-" ID_A ".scope\n", -1);
  put(f->root, "101/cgroup", "12:pids:/docker/" ID_B "\n11:cpu:/docker/" ID_B "\n", -1);
  put(f->root, "102/cgroup",
      "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice/cri-containerd-" ID_B ".scope\n",
      -1);
  put(f->root, "103/cgroup", "0::/machine.slice/libpod-" ID_A ".scope/container\n", -1);
  put(f->root, "104/cgroup", "0::/user.slice/user-1000.slice/session-3.scope\n", -1);
  put(f->root, "105/cgroup", "0::/system.slice/unrelated-" ID_A ".scope\n", -1);
  /* A dockerd with its own data root, where container A's name is; B's name has an escape. */
  put(f->root, "200/comm", "dockerd\n", -1);
  g_autofree char *dr = g_build_filename(f->root, "docker-data", NULL);
  g_autofree char *cmdline = g_strdup_printf("dockerd%c--data-root%c%s%c", 0, 0, dr, 0);
  put(f->root, "200/cmdline", cmdline, (gssize)(strlen("dockerd") + strlen("--data-root") + strlen(dr) + 3));
  put(dr, "containers/" ID_A "/config.v2.json",
      "{\"ID\":\"" ID_A "\",\"Config\":{\"Labels\":{\"x\":\"y\"}},\"Name\":\"/web-1\",\"Driver\":\"overlay2\"}", -1);
  put(dr, "containers/" ID_B "/config.v2.json", "{\"Name\":\"/we\\\"ird\"}", -1);
}

static void teardown(Fixture *f, gconstpointer data)
{
  (void)data;
  g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", f->root);
  g_assert_cmpint(system(cmd), ==, 0);
  g_free(f->root);
}

static void test_docker_v2_named(Fixture *f, gconstpointer data)
{
  (void)data;
  UdsContainer c;
  char shortid[13];
  g_assert_true(uds_container_of(f->root, 100, &c));
  g_assert_cmpstr(c.id, ==, ID_A);
  g_assert_cmpstr(c.runtime, ==, "docker");
  g_assert_cmpstr(c.name, ==, "web-1");
  g_assert_cmpstr(uds_container_label(&c, shortid), ==, "web-1");
  uds_container_clear(&c);
}

static void test_docker_v1_escaped_name_shows_id(Fixture *f, gconstpointer data)
{
  (void)data;
  UdsContainer c;
  char shortid[13];
  g_assert_true(uds_container_of(f->root, 101, &c));
  g_assert_cmpstr(c.id, ==, ID_B);
  g_assert_cmpstr(c.runtime, ==, "docker");
  g_assert_null(c.name);
  g_assert_cmpstr(uds_container_label(&c, shortid), ==, "0123456789ab");
  uds_container_clear(&c);
}

static void test_other_runtimes(Fixture *f, gconstpointer data)
{
  (void)data;
  UdsContainer c;
  g_assert_true(uds_container_of(f->root, 102, &c));
  g_assert_cmpstr(c.id, ==, ID_B);
  g_assert_cmpstr(c.runtime, ==, "containerd");
  uds_container_clear(&c);
  g_assert_true(uds_container_of(f->root, 103, &c));
  g_assert_cmpstr(c.id, ==, ID_A);
  g_assert_cmpstr(c.runtime, ==, "podman");
  uds_container_clear(&c);
}

static void test_not_in_a_container(Fixture *f, gconstpointer data)
{
  (void)data;
  UdsContainer c;
  g_assert_false(uds_container_of(f->root, 104, &c));
  g_assert_cmpstr(c.id, ==, "");
  g_assert_false(uds_container_of(f->root, 105, &c));   /* a hex id in a cgroup no runtime names so */
  g_assert_false(uds_container_of(f->root, 999, &c));   /* no such process */
}

int main(int argc, char **argv)
{
  g_test_init(&argc, &argv, NULL);
  g_test_add("/container/docker-v2-named", Fixture, NULL, setup, test_docker_v2_named, teardown);
  g_test_add("/container/docker-v1-escaped-name", Fixture, NULL, setup, test_docker_v1_escaped_name_shows_id, teardown);
  g_test_add("/container/other-runtimes", Fixture, NULL, setup, test_other_runtimes, teardown);
  g_test_add("/container/not-in-a-container", Fixture, NULL, setup, test_not_in_a_container, teardown);
  return g_test_run();
}
