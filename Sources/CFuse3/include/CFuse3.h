// BootLab's C glue over libfuse3. libfuse's entry points (fuse_main, fuse_new, fuse_loop_mt) are
// macros Swift cannot call, and its operation table is full of C types; this shim owns the FUSE
// loop and the passthrough of backing files, and asks Swift only about exposed (synthesized) files
// through the small callback table below. Paths given to callbacks are relative ("vm.vhdx").
#pragma once
#include <stddef.h>
#include <stdint.h>

typedef struct bl_fuse_callbacks {
    void *ctx;
    // 1 if `path` is an exposed file (fills size and writable), 0 if it passes through, <0 -errno.
    int (*lookup)(void *ctx, const char *path, uint64_t *size, int *writable);
    // Opens an exposed file; returns 0 and a handle, or -errno.
    int (*open)(void *ctx, const char *path, int want_write, uint64_t *handle);
    // Bytes read (the whole request unless past the end), or -errno.
    long (*read)(void *ctx, uint64_t handle, char *buf, size_t size, uint64_t offset);
    long (*write)(void *ctx, uint64_t handle, const char *buf, size_t size, uint64_t offset);
    // Sets an exposed file's size (truncate/ftruncate to a size other than the current one): 0 or -errno.
    int (*truncate)(void *ctx, const char *path, uint64_t size);
    int (*flush)(void *ctx, uint64_t handle);
    void (*release)(void *ctx, uint64_t handle);
    // Names (at the root) that exist only as exposed files; `add` returns nonzero when full.
    void (*list_extra)(void *ctx, void *fill_ctx, int (*add)(void *fill_ctx, const char *name));
} bl_fuse_callbacks;

typedef struct bl_fuse_options {
    int foreground;      // 0: fuse_daemonize after mounting
    int allow_other;
    int single_thread;
    int debug;
    int page_cache;      // 1: read-only exposed files through the kernel page cache (keep_cache); 0: direct_io
} bl_fuse_options;

// Mounts `mountpoint`, passing through `backing_dir` and asking `cb` about exposed files; blocks
// until unmounted (SIGINT/SIGTERM/SIGHUP unmount cleanly). Returns 0, or a nonzero libfuse status.
int bl_fuse_run(const char *mountpoint, const char *backing_dir, const bl_fuse_callbacks *cb,
                const bl_fuse_options *opts);

// Calls `cb(ctx)` on a dedicated thread each time `signum` arrives (the handler only writes one
// byte to a pipe, which is async-signal-safe). Used for SIGUSR1 → write statistics. 0 or -errno.
int bl_watch_signal(int signum, void (*cb)(void *ctx), void *ctx);

// Restores default dispositions and unblocks SIGINT, SIGTERM and SIGHUP. A server started
// by a parent that ignores or blocks them (test runners, some supervisors) would otherwise never
// see its stop signal: libfuse only installs its handlers over default dispositions.
void bl_reset_server_signals(void);
