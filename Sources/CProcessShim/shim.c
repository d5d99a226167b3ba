#define _GNU_SOURCE
#include "CProcessShim.h"

#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

int bl_pidfd_open(pid_t pid) {
    // glibc 2.36 has a pidfd_open wrapper, but the raw syscall also builds against older headers.
    return (int)syscall(SYS_pidfd_open, pid, 0);
}

int bl_spawn_file_actions_addchdir(posix_spawn_file_actions_t *actions, const char *path) {
    return posix_spawn_file_actions_addchdir_np(actions, path);
}

int bl_pipe_cloexec(int fds[2]) {
    return pipe2(fds, O_CLOEXEC);
}
