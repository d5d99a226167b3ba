#define _GNU_SOURCE
#include "CFuse3.h"
#include <fuse.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

// Per-mount state, reachable from every operation as fuse_get_context()->private_data.
typedef struct state {
    int backing_fd;
    const bl_fuse_callbacks *cb;
    struct stat root_st;
    int page_cache;
} state;

// File handles: passthrough files keep their descriptor, exposed files a Swift handle tagged here.
#define EXPOSED_TAG (1ULL << 63)

static state *st_get(void) { return (state *)fuse_get_context()->private_data; }

// "/a/b" -> "a/b"; "/" -> "."
static const char *rel(const char *path) {
    while (*path == '/') path++;
    return *path ? path : ".";
}

static int is_root(const char *path) { return strcmp(rel(path), ".") == 0; }

static void *op_init(struct fuse_conn_info *conn, struct fuse_config *cfg) {
    (void)conn;
    // Page cache or not is decided per file in op_open (fi->direct_io, fi->keep_cache): the
    // global switches would override it. docs/benchmarks-frontends.md has the measured effect.
    cfg->direct_io = 0;
    cfg->use_ino = 0;
    cfg->kernel_cache = 0;
    cfg->auto_cache = 0;
    return fuse_get_context()->private_data;
}

static int op_getattr(const char *path, struct stat *out, struct fuse_file_info *fi) {
    (void)fi;
    state *s = st_get();
    if (is_root(path)) {
        if (fstat(s->backing_fd, out) != 0) return -errno;
        return 0;
    }
    uint64_t size = 0;
    int writable = 0;
    int r = s->cb->lookup(s->cb->ctx, rel(path), &size, &writable);
    if (r < 0) return r;
    if (r == 1) {
        // Ownership and times of the plugin file when it exists, of the directory otherwise.
        if (fstatat(s->backing_fd, rel(path), out, AT_SYMLINK_NOFOLLOW) != 0) *out = s->root_st;
        out->st_mode = S_IFREG | (writable ? 0644 : 0444);
        out->st_nlink = 1;
        out->st_size = (off_t)size;
        out->st_blocks = (blkcnt_t)((size + 511) / 512);
        out->st_blksize = 1 << 20;
        return 0;
    }
    if (fstatat(s->backing_fd, rel(path), out, AT_SYMLINK_NOFOLLOW) != 0) return -errno;
    return 0;
}

typedef struct fill_ctx {
    void *buf;
    fuse_fill_dir_t filler;
} fill_ctx;

static int add_extra(void *p, const char *name) {
    fill_ctx *f = (fill_ctx *)p;
    return f->filler(f->buf, name, NULL, 0, 0);
}

static int op_readdir(const char *path, void *buf, fuse_fill_dir_t filler, off_t off,
                      struct fuse_file_info *fi, enum fuse_readdir_flags flags) {
    (void)off; (void)fi; (void)flags;
    state *s = st_get();
    int fd = openat(s->backing_fd, rel(path), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -errno;
    DIR *d = fdopendir(fd);
    if (!d) { int e = errno; close(fd); return -e; }
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (filler(buf, de->d_name, NULL, 0, 0)) break;
    }
    closedir(d);
    if (is_root(path) && s->cb->list_extra) {
        fill_ctx f = {buf, filler};
        s->cb->list_extra(s->cb->ctx, &f, add_extra);
    }
    return 0;
}

static int op_open(const char *path, struct fuse_file_info *fi) {
    state *s = st_get();
    int want_write = (fi->flags & O_ACCMODE) != O_RDONLY;
    uint64_t size = 0;
    int writable = 0;
    int r = s->cb->lookup(s->cb->ctx, rel(path), &size, &writable);
    if (r < 0) return r;
    if (r == 1) {
        if (want_write && !writable) return -EACCES;
        if (fi->flags & O_TRUNC) return -EPERM;
        uint64_t h = 0;
        r = s->cb->open(s->cb->ctx, rel(path), want_write, &h);
        if (r < 0) return r;
        fi->fh = h | EXPOSED_TAG;
        if (s->page_cache && !writable) {
            // A read-only exposure's bytes cannot change while mounted (its source opens once per
            // name and mount, over an immutable backup): the page cache may keep them across
            // opens. Re-reads run at memory speed; first reads are slower (page-cache fill,
            // 128 KiB readahead): docs/benchmarks-frontends.md.
            fi->keep_cache = 1;
        } else {
            // The default: 1 MiB requests straight to Swift, no page cache (the faster first
            // read; writable exposures change under their overlay and always take this path).
            fi->direct_io = 1;
        }
        return 0;
    }
    int fd = openat(s->backing_fd, rel(path), (fi->flags & ~(O_CREAT | O_EXCL | O_NOFOLLOW)) | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) return -errno;
    fi->fh = (uint64_t)fd;
    // Passthrough files can change behind the mount: no page cache of ours in front of theirs.
    fi->direct_io = 1;
    return 0;
}

static int op_read(const char *path, char *buf, size_t size, off_t off, struct fuse_file_info *fi) {
    (void)path;
    state *s = st_get();
    if (fi->fh & EXPOSED_TAG) return (int)s->cb->read(s->cb->ctx, fi->fh & ~EXPOSED_TAG, buf, size, (uint64_t)off);
    ssize_t n = pread((int)fi->fh, buf, size, off);
    return n < 0 ? -errno : (int)n;
}

static int op_write(const char *path, const char *buf, size_t size, off_t off, struct fuse_file_info *fi) {
    (void)path;
    state *s = st_get();
    if (fi->fh & EXPOSED_TAG) return (int)s->cb->write(s->cb->ctx, fi->fh & ~EXPOSED_TAG, buf, size, (uint64_t)off);
    ssize_t n = pwrite((int)fi->fh, buf, size, off);
    return n < 0 ? -errno : (int)n;
}

static int op_flush(const char *path, struct fuse_file_info *fi) {
    (void)path;
    state *s = st_get();
    if (fi->fh & EXPOSED_TAG) return s->cb->flush(s->cb->ctx, fi->fh & ~EXPOSED_TAG);
    return 0;
}

static int op_fsync(const char *path, int datasync, struct fuse_file_info *fi) {
    (void)path;
    state *s = st_get();
    if (fi->fh & EXPOSED_TAG) return s->cb->flush(s->cb->ctx, fi->fh & ~EXPOSED_TAG);
    int r = datasync ? fdatasync((int)fi->fh) : fsync((int)fi->fh);
    return r < 0 ? -errno : 0;
}

static int op_release(const char *path, struct fuse_file_info *fi) {
    (void)path;
    state *s = st_get();
    if (fi->fh & EXPOSED_TAG) s->cb->release(s->cb->ctx, fi->fh & ~EXPOSED_TAG);
    else close((int)fi->fh);
    return 0;
}

static int op_truncate(const char *path, off_t size, struct fuse_file_info *fi) {
    state *s = st_get();
    uint64_t esize = 0;
    int writable = 0;
    int r = s->cb->lookup(s->cb->ctx, rel(path), &esize, &writable);
    if (r < 0) return r;
    // An exposed file: a no-op truncate always succeeds; another size is Swift's to decide (a
    // writable VHDX grows through its overlay; read-only and fixed-size files refuse).
    if (r == 1) {
        if (size < 0) return -EINVAL;
        if ((uint64_t)size == esize) return 0;
        if (!writable) return -EACCES;
        return s->cb->truncate ? s->cb->truncate(s->cb->ctx, rel(path), (uint64_t)size) : -EPERM;
    }
    if (fi && !(fi->fh & EXPOSED_TAG)) return ftruncate((int)fi->fh, size) < 0 ? -errno : 0;
    int fd = openat(s->backing_fd, rel(path), O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) return -errno;
    r = ftruncate(fd, size) < 0 ? -errno : 0;
    close(fd);
    return r;
}

static int op_readlink(const char *path, char *buf, size_t size) {
    state *s = st_get();
    ssize_t n = readlinkat(st_get()->backing_fd, rel(path), buf, size - 1);
    (void)s;
    if (n < 0) return -errno;
    buf[n] = 0;
    return 0;
}

static int op_statfs(const char *path, struct statvfs *out) {
    (void)path;
    return fstatvfs(st_get()->backing_fd, out) < 0 ? -errno : 0;
}

static int op_utimens(const char *path, const struct timespec tv[2], struct fuse_file_info *fi) {
    (void)fi;
    state *s = st_get();
    uint64_t size; int w;
    int r = s->cb->lookup(s->cb->ctx, rel(path), &size, &w);
    if (r < 0) return r;
    if (r == 1) return 0; // times of an exposed file are the plugin's; ignore (touch must not fail)
    return utimensat(s->backing_fd, rel(path), tv, AT_SYMLINK_NOFOLLOW) < 0 ? -errno : 0;
}

static const struct fuse_operations ops = {
    .init = op_init,
    .getattr = op_getattr,
    .readdir = op_readdir,
    .open = op_open,
    .read = op_read,
    .write = op_write,
    .flush = op_flush,
    .fsync = op_fsync,
    .release = op_release,
    .truncate = op_truncate,
    .readlink = op_readlink,
    .statfs = op_statfs,
    .utimens = op_utimens,
};

int bl_fuse_run(const char *mountpoint, const char *backing_dir, const bl_fuse_callbacks *cb,
                const bl_fuse_options *opts) {
    state s = {0};
    s.cb = cb;
    s.page_cache = opts->page_cache;
    s.backing_fd = open(backing_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (s.backing_fd < 0) { fprintf(stderr, "bootlab mount: %s: %s\n", backing_dir, strerror(errno)); return 1; }
    fstat(s.backing_fd, &s.root_st);

    char *argv[8];
    int argc = 0;
    argv[argc++] = "bootlab";
    argv[argc++] = "-o";
    argv[argc++] = opts->allow_other ? "fsname=bootlab,subtype=bootlab,allow_other" : "fsname=bootlab,subtype=bootlab";
    if (opts->debug) argv[argc++] = "-d";
    argv[argc] = NULL;
    struct fuse_args args = FUSE_ARGS_INIT(argc, argv);

    int status = 1;
    struct fuse *f = fuse_new(&args, &ops, sizeof(ops), &s);
    if (!f) goto out;
    if (fuse_mount(f, mountpoint) != 0) { status = 2; goto destroy; }
    if (fuse_daemonize(opts->foreground) != 0) { status = 3; goto unmount; }
    struct fuse_session *se = fuse_get_session(f);
    if (fuse_set_signal_handlers(se) != 0) { status = 4; goto unmount; }
    // The loop returns the number of the signal that ended it (a clean unmount) or <0 on error.
    status = (opts->single_thread ? fuse_loop(f) : fuse_loop_mt(f, 0)) < 0 ? 5 : 0;
    fuse_remove_signal_handlers(se);
unmount:
    fuse_unmount(f);
destroy:
    fuse_destroy(f);
out:
    fuse_opt_free_args(&args);
    close(s.backing_fd);
    return status;
}
