// BootLab's C glue over libfuse3. libfuse's entry points (fuse_main, fuse_new, fuse_loop_mt) are
// macros Swift cannot call, and its operation table is full of C types; this shim owns the FUSE
// loop and the passthrough of backing files, and asks Swift only about exposed (synthesized) files
// through the small callback table below. Paths given to callbacks are relative ("vm.vhdx").
#pragma once
#include <stddef.h>
#include <stdint.h>

// One piece of a read's reply: `fd` >= 0: `len` bytes of that file at `pos` (the shim hands them
// to the kernel with splice, never copying them through memory); `fd` < 0: `len` bytes the read
// callback wrote into the request buffer at `pos`.
typedef struct bl_fuse_segment {
    int fd;
    uint64_t pos;
    size_t len;
} bl_fuse_segment;

#define BL_FUSE_MAX_SEGMENTS 16

typedef struct bl_fuse_callbacks {
    void *ctx;
    // 1 if `path` is an exposed file (fills size and writable), 0 if it passes through, <0 -errno.
    int (*lookup)(void *ctx, const char *path, uint64_t *size, int *writable);
    // Opens an exposed file; returns 0 and a handle, or -errno.
    int (*open)(void *ctx, const char *path, int want_write, uint64_t *handle);
    // Bytes read (the whole request unless past the end), or -errno.
    long (*read)(void *ctx, uint64_t handle, char *buf, size_t size, uint64_t offset);
    long (*write)(void *ctx, uint64_t handle, const char *buf, size_t size, uint64_t offset);
    // Optional. A read answered as pieces (at most BL_FUSE_MAX_SEGMENTS, in order, covering the
    // bytes read): file ranges where the bytes are a file's unchanged bytes, else bytes written
    // into `buf` (`size` bytes, at the request's relative offsets). Bytes read, or -errno.
    long (*read_segments)(void *ctx, uint64_t handle, char *buf, size_t size, uint64_t offset,
                          bl_fuse_segment *segs, int *nsegs);
    // Sets an exposed file's size (truncate/ftruncate to a size other than the current one): 0 or -errno.
    int (*truncate)(void *ctx, const char *path, uint64_t size);
    int (*flush)(void *ctx, uint64_t handle);
    void (*release)(void *ctx, uint64_t handle);
    // Optional. For a read-only open of a read-only exposed file: a descriptor whose bytes are the
    // file's bytes at the same offsets, its size the file's size (the kernel then reads it itself:
    // FUSE passthrough), or -1. Kept open by the caller as long as the handle.
    int (*passthrough_fd)(void *ctx, uint64_t handle);
    // Optional. The kernel accepted passthrough for an open of `handle` (its reads bypass `read`).
    void (*passthrough_opened)(void *ctx, uint64_t handle);
    // Names (at the root) that exist only as exposed files; `add` returns nonzero when full.
    void (*list_extra)(void *ctx, void *fill_ctx, int (*add)(void *fill_ctx, const char *name));
} bl_fuse_callbacks;

typedef struct bl_fuse_options {
    int foreground;      // 0: fuse_daemonize after mounting
    int allow_other;
    int single_thread;
    int debug;
    int page_cache;      // 1: read-only exposed files through the kernel page cache (keep_cache); 0: direct_io
    int splice;          // how file-backed reads are answered: BL_SPLICE_* below
    int file_backed;     // 1: some exposed file is file-backed; requests then fit a spliced reply in a pipe
    int passthrough;     // 1: offer FUSE passthrough to the kernel (BL_SPLICE_OWN only); files opt in via passthrough_fd
} bl_fuse_options;

// BL_SPLICE_OWN (the default): the shim answers reads of exposed files itself, splicing file-backed
// pieces through a per-thread pipe sized for a whole 1 MiB reply (root may exceed
// fs.pipe-max-size); BL_SPLICE_LIBFUSE: libfuse's read_buf with FUSE_CAP_SPLICE_WRITE (its pipe is
// fs.pipe-max-size, so 1 MiB replies fall back to a copy); BL_SPLICE_OFF: every read copies through
// memory. docs/benchmarks-frontends.md has the measured effect of each.
enum { BL_SPLICE_OWN = 0, BL_SPLICE_LIBFUSE = 1, BL_SPLICE_OFF = 2 };

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
