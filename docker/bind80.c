/*
 * bind80: the images' entrypoint in front of each service, so that it binds
 * port 80 as user 65532 on any container runtime.
 *
 *   bind80 PROGRAM [ARG ...]   runs PROGRAM (execv, same PID) with
 *                              CAP_NET_BIND_SERVICE as an ambient capability
 *                              when this file's capability gave it one
 *   bind80 --setcap FILE       (at build time) gives FILE that file capability:
 *                              cap_net_bind_service, permitted only
 *
 * Docker sets net.ipv4.ip_unprivileged_port_start=0 in every container, and
 * the manifests and the chart set it in every pod: there any user binds 80.
 * A pod made by `kubectl create deployment` has no such sysctl, and a runtime
 * that does not set it (containerd 1.x without enable_unprivileged_ports)
 * leaves the kernel's 1024: a non-root process cannot bind 80 there. A file
 * capability on the service's own binary would need the effective bit, and
 * the kernel refuses to exec such a file where the capability is not in the
 * bounding set (Compose's cap_drop: ALL, the manifests' drop: [ALL]). This
 * file's capability is permitted only, which never stops the exec: where the
 * runtime's bounding set has NET_BIND_SERVICE (its default capabilities, or
 * the restricted profile's one capability added back) and no_new_privs is
 * off, bind80 holds it, raises it as an ambient capability and execs the
 * service, which then binds 80; elsewhere it execs the service unchanged.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>
#include <linux/capability.h>

static int set_file_capability(const char *path) {
    /* struct vfs_cap_data, revision 2: permitted cap_net_bind_service, no effective bit. */
    uint32_t data[5] = {VFS_CAP_REVISION_2, 1u << CAP_NET_BIND_SERVICE, 0, 0, 0};
    if (setxattr(path, "security.capability", data, sizeof data, 0) != 0) {
        fprintf(stderr, "bind80: setxattr security.capability on %s: %s\n", path, strerror(errno));
        return 1;
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "--setcap") == 0)
        return set_file_capability(argv[2]);
    if (argc < 2 || argv[1][0] == '-') {
        fprintf(stderr, "usage: bind80 PROGRAM [ARG ...] | bind80 --setcap FILE\n");
        return 2;
    }
    struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct caps[2];
    if (syscall(SYS_capget, &header, caps) == 0
        && (caps[0].permitted & (1u << CAP_NET_BIND_SERVICE))) {
        caps[0].inheritable |= 1u << CAP_NET_BIND_SERVICE;
        if (syscall(SYS_capset, &header, caps) == 0)
            prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_NET_BIND_SERVICE, 0, 0);
    }
    execv(argv[1], argv + 1);
    fprintf(stderr, "bind80: cannot run %s: %s\n", argv[1], strerror(errno));
    return 127;
}
