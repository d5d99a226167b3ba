#ifndef BOOTLAB_CPROCESSSHIM_H
#define BOOTLAB_CPROCESSSHIM_H

#include <spawn.h>
#include <sys/types.h>

// Linux calls Swift's Glibc module does not import: glibc declares them only under _GNU_SOURCE
// (posix_spawn_file_actions_addchdir_np, pipe2) or in <sys/pidfd.h>, outside the module map.

/// A descriptor that becomes readable when the child `pid` exits (Linux >= 5.3), so a parent can
/// poll(2) for the exit together with the child's pipes instead of sleeping in a loop.
/// -1 with errno set on failure.
int bl_pidfd_open(pid_t pid);

/// posix_spawn_file_actions_addchdir_np: the child changes directory before exec (glibc >= 2.29).
int bl_spawn_file_actions_addchdir(posix_spawn_file_actions_t *actions, const char *path);

/// pipe2(fds, O_CLOEXEC): both ends close on exec, atomically, so a child another thread starts
/// meanwhile cannot inherit them (it would hold our end of file back).
int bl_pipe_cloexec(int fds[2]);

#endif
