#define _GNU_SOURCE
#include "CFuse3.h"
#include <fuse.h>
#include <fuse_lowlevel.h>
#include <linux/fuse.h>
#include <dirent.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
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
    int splice;
    unsigned max_read;   // 0: libfuse's default (1 MiB)
    int fusefd;
    int passthrough;            // 1: offer kernel passthrough (opts->passthrough)
    int passthrough_offered;    // the kernel's INIT offered FUSE_PASSTHROUGH
    int passthrough_on;         // our INIT reply accepted it (set before any OPEN can arrive)
    // Backing ids by descriptor, registered once and kept until unmount: the opener looks its id up
    // after our reply is written, so an id closed right after the reply could already be gone.
    pthread_mutex_t backing_lock;
    int backing_count;
    struct { int fd; int id; } backing[64];
} state;

// MARK: Kernel passthrough (FUSE protocol 7.40, Linux >= 6.9)
//
// An exposed file whose bytes are exactly one file's bytes at the same offsets (a read-only
// `--expose` of a raw image) can be opened in passthrough mode: the kernel then reads the backing
// file itself, through its page cache, and never sends READ requests for that open file: one copy
// per byte, as `cat` of the backing file. libfuse 3.14 (Debian 12) predates the protocol's
// passthrough fields, so the shim adds them to two replies libfuse builds: INIT (FUSE_PASSTHROUGH
// in flags2, a stack depth) and OPEN (FOPEN_PASSTHROUGH and the backing id registered with
// FUSE_DEV_IOC_BACKING_OPEN, which needs CAP_SYS_ADMIN). The replies pass through a custom
// writev (fuse_session_custom_io) that knows which request its thread is answering. Anything not
// granted (an older kernel, no capability) leaves the splice/copy path in place.
#define BL_FUSE_PASSTHROUGH_FLAGS2 (1u << (37 - 32))  // FUSE_PASSTHROUGH is bit 37 of the 64 flags
#define BL_FOPEN_PASSTHROUGH (1u << 7)
// Backing files may live on a stacked file system (overlayfs: depth 1): the largest depth allowed.
#define BL_FUSE_STACK_DEPTH 2
struct bl_backing_map { int32_t fd; uint32_t flags; uint64_t padding; };
#define BL_DEV_IOC_BACKING_OPEN _IOW(229, 1, struct bl_backing_map)
#define BL_DEV_IOC_BACKING_CLOSE _IOW(229, 2, uint32_t)
// fuse_init_out as of protocol 7.40 (libfuse 3.14's copy calls the last 28 bytes "unused").
struct bl_init_out {
    uint32_t major, minor, max_readahead, flags;
    uint16_t max_background, congestion_threshold;
    uint32_t max_write, time_gran;
    uint16_t max_pages, map_alignment;
    uint32_t flags2, max_stack_depth;
    uint16_t unused[12];
};
_Static_assert(sizeof(struct bl_init_out) == 64, "fuse_init_out is 64 bytes");
struct bl_open_out { uint64_t fh; uint32_t open_flags; int32_t backing_id; };
_Static_assert(sizeof(struct bl_open_out) == sizeof(struct fuse_open_out), "fuse_open_out");

// The request this worker thread is answering (set before libfuse processes it).
static __thread struct {
    state *s;
    uint32_t opcode;
    uint64_t unique;
    uint64_t handle;     // an OPEN's exposed handle, for the passthrough_opened callback
    int backing_id;      // > 0: the OPEN being answered goes into passthrough with this id
} cur;

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
    state *s = st_get();
    if (s->max_read) conn->max_read = s->max_read;  // libfuse requires init to repeat the mount option
    if (s->splice == BL_SPLICE_LIBFUSE) {
        // libfuse splices a read_buf reply that names a file (op_read_buf) through its own pipe.
        // Not SPLICE_MOVE: the reader's pages are not the page cache's (direct_io), nothing to move.
        if (conn->capable & FUSE_CAP_SPLICE_WRITE) conn->want |= FUSE_CAP_SPLICE_WRITE;
    }
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

// The kernel's id for backing file `fd` (registered on first use), or <= 0 when it refuses.
static int backing_id(state *s, int fd) {
    int id = 0;
    pthread_mutex_lock(&s->backing_lock);
    for (int i = 0; i < s->backing_count; i++) if (s->backing[i].fd == fd) id = s->backing[i].id;
    if (id == 0 && s->backing_count < (int)(sizeof(s->backing) / sizeof(s->backing[0]))) {
        struct bl_backing_map m = {.fd = fd};
        id = ioctl(s->fusefd, BL_DEV_IOC_BACKING_OPEN, &m);
        if (id > 0) s->backing[s->backing_count++] = (typeof(s->backing[0])){fd, id};
    }
    pthread_mutex_unlock(&s->backing_lock);
    return id;
}

static void backing_close_all(state *s) {
    for (int i = 0; i < s->backing_count; i++) {
        uint32_t id = (uint32_t)s->backing[i].id;
        (void)ioctl(s->fusefd, BL_DEV_IOC_BACKING_CLOSE, &id);
    }
    s->backing_count = 0;
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
        if (!want_write && !writable && s->passthrough_on && s->cb->passthrough_fd &&
            cur.s == s && cur.opcode == FUSE_OPEN) {
            int bfd = s->cb->passthrough_fd(s->cb->ctx, h);
            if (bfd >= 0) {
                int id = backing_id(s, bfd);
                if (id > 0) {
                    cur.backing_id = id;
                    cur.handle = h;
                    return 0;  // the reply gains FOPEN_PASSTHROUGH in io_writev
                }
            }
        }
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

// BL_SPLICE_LIBFUSE only: the reply as a buffer vector naming files, which libfuse splices when the
// reply and its header fit its pipe (fs.pipe-max-size) and copies otherwise. Each memory piece
// is its own allocation (libfuse frees every memory buffer of the vector).
static int op_read_buf(const char *path, struct fuse_bufvec **bufp, size_t size, off_t off, struct fuse_file_info *fi) {
    (void)path;
    state *s = st_get();
    bl_fuse_segment segs[BL_FUSE_MAX_SEGMENTS];
    int nsegs = 0;
    if (!(fi->fh & EXPOSED_TAG)) {
        segs[0] = (bl_fuse_segment){(int)fi->fh, (uint64_t)off, size};
        nsegs = 1;
    }
    char *buf = NULL;
    if (nsegs == 0) {
        buf = malloc(size ? size : 1);
        if (!buf) return -ENOMEM;
        long n = s->cb->read_segments(s->cb->ctx, fi->fh & ~EXPOSED_TAG, buf, size, (uint64_t)off, segs, &nsegs);
        if (n < 0) { free(buf); return (int)n; }
    }
    struct fuse_bufvec *v = calloc(1, sizeof(*v) + (size_t)(nsegs > 0 ? nsegs - 1 : 0) * sizeof(struct fuse_buf));
    if (!v) { free(buf); return -ENOMEM; }
    v->count = (size_t)nsegs;
    int buf_given = 0;
    for (int i = 0; i < nsegs; i++) {
        struct fuse_buf *b = &v->buf[i];
        b->size = segs[i].len;
        if (segs[i].fd >= 0) {
            b->flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK | FUSE_BUF_FD_RETRY;
            b->fd = segs[i].fd;
            b->pos = (off_t)segs[i].pos;
        } else if (!buf_given && segs[i].pos == 0) {
            b->mem = buf;
            buf_given = 1;
        } else {
            b->mem = malloc(segs[i].len ? segs[i].len : 1);
            if (!b->mem) {
                for (int j = 0; j < i; j++) if (!(v->buf[j].flags & FUSE_BUF_IS_FD)) free(v->buf[j].mem);
                free(v);
                if (!buf_given) free(buf);
                return -ENOMEM;
            }
            memcpy(b->mem, buf + segs[i].pos, segs[i].len);
        }
    }
    if (!buf_given) free(buf);
    *bufp = v;
    return 0;
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

// MARK: Reads answered by the shim (BL_SPLICE_OWN)
//
// libfuse 3.14 splices a reply only when it, its header and three more pages fit the pipe it
// sized to fs.pipe-max-size (1 MiB by default), so the 1 MiB reads exposed files get would always
// fall back to a copy. Here each worker thread receives requests itself: a READ of an exposed file
// is answered by the shim — the header written into the thread's own pipe, the file-backed pieces
// spliced from their file into it (page references, no copy), zero pieces written from memory,
// then the whole reply spliced to /dev/fuse in one call, where the kernel copies it once into the
// reader's pages. The pipe is 2 MiB with CAP_SYS_RESOURCE, else fs.pipe-max-size; then the mount's
// max_read is one page less (bl_fuse_run), so a whole aligned reply still fits. A reply that does
// not fit, or a source that is not file-backed, is answered from memory (writev, as libfuse).
// Every other request goes to libfuse as fuse_loop_mt would pass it.
// Known gap: an INTERRUPT for a READ answered here finds no request in libfuse's list and stays
// queued there (a few bytes per interrupted read, e.g. a reader killed mid-read).

#define MAX_REPLY (1u << 20)          // FUSE_MAX_MAX_PAGES pages: the largest read libfuse 3.14 accepts
#define PIPE_BYTES (2u << 20)         // a 1 MiB reply plus its header (pipe sizes are powers of 2 pages)
#define WORKERS 8

typedef struct worker {
    pthread_t thread;
    struct fuse_session *se;
    state *s;
    sem_t *finished;
    struct fuse_buf fbuf;
    char *buf;                        // MAX_REPLY bytes: the pieces that are not a file's
    int pipe[2];
    int pipe_state;                   // 0 not tried, 1 ready, -1 unavailable
    size_t pipe_bytes;
    int error;
} worker;

// The pipe size this process may set: 2 MiB with CAP_SYS_RESOURCE, else fs.pipe-max-size.
static size_t largest_pipe(void) {
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0) return 0;
    int got = fcntl(p[0], F_SETPIPE_SZ, PIPE_BYTES);
    if (got < 0) {
        int max = 0;
        FILE *f = fopen("/proc/sys/fs/pipe-max-size", "re");
        if (f) { if (fscanf(f, "%d", &max) != 1) max = 0; fclose(f); }
        got = max > 0 ? fcntl(p[0], F_SETPIPE_SZ, max) : -1;
    }
    close(p[0]); close(p[1]);
    return got > 0 ? (size_t)got : 0;
}

static int pipe_ready(worker *w) {
    if (w->pipe_state != 0) return w->pipe_state > 0;
    w->pipe_state = -1;
    if (pipe2(w->pipe, O_CLOEXEC | O_NONBLOCK) != 0) return 0;
    size_t want = largest_pipe();
    int got = want > 0 ? fcntl(w->pipe[0], F_SETPIPE_SZ, (int)want) : -1;
    if (got < 3 * 4096) {
        close(w->pipe[0]); close(w->pipe[1]);
        return 0;
    }
    w->pipe_bytes = (size_t)got;
    w->pipe_state = 1;
    return 1;
}

// Whether a reply of `len` file bytes fits the pipe: a slot (page) per file page it touches,
// one for the header, one for a zero or memory piece's partial page.
static int fits_pipe(const worker *w, size_t len) {
    return (len + 4095) / 4096 + 1 <= w->pipe_bytes / 4096;
}


// After a failed splice the pipe may hold part of a reply: a fresh one for the next request.
static void pipe_drop(worker *w) {
    if (w->pipe_state > 0) { close(w->pipe[0]); close(w->pipe[1]); }
    w->pipe_state = 0;
}

static int write_all(int fd, const void *p, size_t n) {
    const char *c = p;
    while (n > 0) {
        ssize_t r = write(fd, c, n);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        c += r; n -= (size_t)r;
    }
    return 0;
}

static const char zeros[4096];

// Fills the pipe with `len` bytes of `fd` at `pos`; bytes past the file's end (a file that
// shrank) are zeros, as RawFile reads them.
static int splice_piece(worker *w, int fd, uint64_t pos, size_t len) {
    loff_t off = (loff_t)pos;
    while (len > 0) {
        ssize_t r = splice(fd, &off, w->pipe[1], NULL, len, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return -1;
        if (r == 0) {
            while (len > 0) {
                size_t k = len < sizeof(zeros) ? len : sizeof(zeros);
                if (write_all(w->pipe[1], zeros, k) != 0) return -1;
                len -= k;
            }
            return 0;
        }
        len -= (size_t)r;
    }
    return 0;
}

static int pread_all(int fd, char *p, size_t n, uint64_t pos) {
    while (n > 0) {
        ssize_t r = pread(fd, p, n, (off_t)pos);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return -1;
        if (r == 0) { memset(p, 0, n); return 0; }
        p += r; n -= (size_t)r; pos += (uint64_t)r;
    }
    return 0;
}

static void send_reply(int fusefd, struct fuse_out_header *out, const char *data, size_t n) {
    struct iovec iov[2] = {{out, sizeof(*out)}, {(void *)data, n}};
    // ENOENT: the request was interrupted and is gone; nothing else to do, as in libfuse.
    (void)!writev(fusefd, iov, n > 0 ? 2 : 1);
}

// 1 if the request was a READ of an exposed file and was answered, 0 to leave it to libfuse.
static int answer_read(worker *w, int fusefd, const char *req, size_t len) {
    if (len < sizeof(struct fuse_in_header) + sizeof(struct fuse_read_in)) return 0;
    const struct fuse_in_header *in = (const struct fuse_in_header *)req;
    if (in->opcode != FUSE_READ) return 0;
    const struct fuse_read_in *rd = (const struct fuse_read_in *)(req + sizeof(*in));
    if (!(rd->fh & EXPOSED_TAG) || rd->size > MAX_REPLY) return 0;
    state *s = w->s;
    uint64_t h = rd->fh & ~EXPOSED_TAG;
    bl_fuse_segment segs[BL_FUSE_MAX_SEGMENTS];
    int nsegs = 0;
    long n;
    if (s->cb->read_segments && pipe_ready(w) && fits_pipe(w, rd->size)) {
        n = s->cb->read_segments(s->cb->ctx, h, w->buf, rd->size, rd->offset, segs, &nsegs);
    } else {
        n = s->cb->read(s->cb->ctx, h, w->buf, rd->size, rd->offset);
        if (n > 0) { segs[0] = (bl_fuse_segment){-1, 0, (size_t)n}; nsegs = 1; }
    }
    struct fuse_out_header out = {.len = sizeof(out), .error = 0, .unique = in->unique};
    if (n < 0) {
        out.error = (int32_t)n;
        send_reply(fusefd, &out, NULL, 0);
        return 1;
    }
    out.len += (uint32_t)n;
    int spliced = 0;
    size_t slots = 1;  // the header's
    for (int i = 0; i < nsegs; i++) {
        if (segs[i].fd >= 0) { spliced = 1; slots += (segs[i].pos % 4096 + segs[i].len + 4095) / 4096; }
        else slots += (segs[i].len + 4095) / 4096 + 1;
    }
    // A reply the pipe cannot hold whole (an unaligned read as large as max_read) is copied.
    if (spliced && slots > w->pipe_bytes / 4096) goto copy_unspliced;
    if (spliced) {
        if (write_all(w->pipe[1], &out, sizeof(out)) != 0) goto copy;
        for (int i = 0; i < nsegs; i++) {
            int r = segs[i].fd >= 0 ? splice_piece(w, segs[i].fd, segs[i].pos, segs[i].len)
                                    : write_all(w->pipe[1], w->buf + segs[i].pos, segs[i].len);
            if (r != 0) goto copy;
        }
        for (;;) {
            ssize_t r = splice(w->pipe[0], NULL, fusefd, NULL, out.len, 0);
            if (r < 0 && errno == EINTR) continue;
            if (r == (ssize_t)out.len) return 1;
            // The kernel refused the reply (ENOENT: interrupted) or took part of it: the pipe
            // cannot be trusted for the next one.
            pipe_drop(w);
            return 1;
        }
    }
    send_reply(fusefd, &out, w->buf, (size_t)n);
    return 1;
copy:
    // The pipe failed half-way: copy the file pieces into the buffer and answer from memory.
    pipe_drop(w);
copy_unspliced:;
    size_t at = 0;
    for (int i = 0; i < nsegs; i++) {
        if (segs[i].fd >= 0 && pread_all(segs[i].fd, w->buf + at, segs[i].len, segs[i].pos) != 0) {
            out.len = sizeof(out);
            out.error = -EIO;
            send_reply(fusefd, &out, NULL, 0);
            return 1;
        }
        at += segs[i].len;
    }
    send_reply(fusefd, &out, w->buf, (size_t)n);
    return 1;
}

// libfuse writes every reply through here once fuse_session_custom_io is set (BL_SPLICE_OWN).
static ssize_t io_writev(int fd, struct iovec *iov, int count, void *userdata) {
    (void)userdata;
    state *s = cur.s;
    const struct fuse_out_header *out = iov[0].iov_base;
    if (s && count == 2 && iov[0].iov_len == sizeof(*out) && out->error == 0 && out->unique == cur.unique) {
        if (cur.opcode == FUSE_INIT && s->passthrough && s->passthrough_offered &&
            iov[1].iov_len == sizeof(struct bl_init_out)) {
            struct bl_init_out o;
            memcpy(&o, iov[1].iov_base, sizeof(o));
            if (!(o.flags & FUSE_WRITEBACK_CACHE)) {  // the kernel refuses passthrough with it
                o.flags |= FUSE_INIT_EXT;
                o.flags2 |= BL_FUSE_PASSTHROUGH_FLAGS2;
                o.max_stack_depth = BL_FUSE_STACK_DEPTH;
                struct iovec v[2] = {iov[0], {&o, sizeof(o)}};
                ssize_t r = writev(fd, v, 2);
                if (r >= 0) s->passthrough_on = 1;
                return r;
            }
        }
        if (cur.opcode == FUSE_OPEN && cur.backing_id > 0 && iov[1].iov_len == sizeof(struct bl_open_out)) {
            struct bl_open_out o;
            memcpy(&o, iov[1].iov_base, sizeof(o));
            o.open_flags &= ~(uint32_t)(FOPEN_DIRECT_IO | FOPEN_KEEP_CACHE);
            o.open_flags |= BL_FOPEN_PASSTHROUGH;
            o.backing_id = cur.backing_id;
            struct iovec v[2] = {iov[0], {&o, sizeof(o)}};
            ssize_t r = writev(fd, v, 2);
            int e = errno;
            cur.backing_id = 0;
            if (r >= 0 && s->cb->passthrough_opened) s->cb->passthrough_opened(s->cb->ctx, cur.handle);
            errno = e;
            return r;
        }
    }
    return writev(fd, iov, count);
}

static ssize_t io_read(int fd, void *buf, size_t len, void *userdata) {
    (void)userdata;
    return read(fd, buf, len);
}

// Notes which request this thread answers; an INIT also says whether the kernel offers passthrough.
static void note_request(worker *w, const char *req, size_t len) {
    if (len < sizeof(struct fuse_in_header)) { cur.s = NULL; return; }
    const struct fuse_in_header *in = (const struct fuse_in_header *)req;
    cur.s = w->s;
    cur.opcode = in->opcode;
    cur.unique = in->unique;
    cur.backing_id = 0;
    // fuse_init_in: major, minor, max_readahead, flags, then (FUSE_INIT_EXT) flags2.
    if (in->opcode == FUSE_INIT && len >= sizeof(*in) + 5 * sizeof(uint32_t)) {
        uint32_t words[5];
        memcpy(words, req + sizeof(*in), sizeof(words));
        w->s->passthrough_offered = (words[3] & FUSE_INIT_EXT) && (words[4] & BL_FUSE_PASSTHROUGH_FLAGS2);
    }
}

static void *worker_main(void *arg) {
    worker *w = arg;
    int fusefd = fuse_session_fd(w->se);
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
    while (!fuse_session_exited(w->se)) {
        // Cancelled (at unmount) only while waiting for a request, never inside Swift.
        pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, NULL);
        int res = fuse_session_receive_buf(w->se, &w->fbuf);
        pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
        if (res == -EINTR || res == -EAGAIN) continue;
        if (res <= 0) { w->error = res; break; }
        if (!(w->fbuf.flags & FUSE_BUF_IS_FD) && answer_read(w, fusefd, w->fbuf.mem, (size_t)res)) continue;
        if (!(w->fbuf.flags & FUSE_BUF_IS_FD)) note_request(w, w->fbuf.mem, (size_t)res);
        else cur.s = NULL;
        fuse_session_process_buf(w->se, &w->fbuf);
        cur.s = NULL;
    }
    fuse_session_exit(w->se);
    sem_post(w->finished);
    return NULL;
}

// fuse_loop_mt's contract with a fixed pool: runs until the session exits (a signal, an unmount),
// then cancels the workers still waiting for requests. 0, or the first error (<0).
static int loop_own(struct fuse_session *se, state *s, int nworkers) {
    worker ws[WORKERS];
    sem_t finished;
    sem_init(&finished, 0, 0);
    int started = 0, err = 0;
    // Workers take no signals: they reach the main thread, whose handlers end the session.
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    for (int i = 0; i < nworkers; i++) {
        ws[i] = (worker){.se = se, .s = s, .finished = &finished, .pipe_state = 0};
        ws[i].buf = malloc(MAX_REPLY);
        if (!ws[i].buf || pthread_create(&ws[i].thread, NULL, worker_main, &ws[i]) != 0) {
            free(ws[i].buf);
            err = -ENOMEM;
            break;
        }
        started++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (started > 0) {
        while (!fuse_session_exited(se)) sem_wait(&finished);
    }
    for (int i = 0; i < started; i++) pthread_cancel(ws[i].thread);
    for (int i = 0; i < started; i++) {
        pthread_join(ws[i].thread, NULL);
        if (ws[i].error < 0 && err == 0) err = ws[i].error;
        free(ws[i].fbuf.mem);
        free(ws[i].buf);
        pipe_drop(&ws[i]);
    }
    sem_destroy(&finished);
    fuse_session_reset(se);
    return err;
}

int bl_fuse_run(const char *mountpoint, const char *backing_dir, const bl_fuse_callbacks *cb,
                const bl_fuse_options *opts) {
    state s = {0};
    s.cb = cb;
    s.page_cache = opts->page_cache;
    s.splice = opts->splice;
    s.passthrough = opts->passthrough && opts->splice == BL_SPLICE_OWN;
    pthread_mutex_init(&s.backing_lock, NULL);
    s.backing_fd = open(backing_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (s.backing_fd < 0) { fprintf(stderr, "bootlab mount: %s: %s\n", backing_dir, strerror(errno)); return 1; }
    fstat(s.backing_fd, &s.root_st);

    char *argv[8];
    int argc = 0;
    argv[argc++] = "bootlab";
    argv[argc++] = "-o";
    argv[argc++] = opts->allow_other ? "fsname=bootlab,subtype=bootlab,allow_other" : "fsname=bootlab,subtype=bootlab";
    // A spliced reply must fit the pipe whole, header included: with a pipe of 1 MiB
    // (fs.pipe-max-size, no CAP_SYS_RESOURCE) requests stop one page short of 1 MiB, so an
    // aligned read of max_read bytes plus its header fills the pipe exactly.
    char max_read[48];
    // Only mounts that serve file-backed exposures: other sources (a backup's 1 MiB blocks) read
    // best in whole 1 MiB requests (a 1020 KiB one is a partial block: through the reader's cache).
    size_t pipe_bytes = (s.splice == BL_SPLICE_OFF || !opts->file_backed) ? 0 : largest_pipe();
    // libfuse's own splice (fuse_send_data_iov) wants room for a page per buffer and per iovec
    // beyond the reply itself, else it copies: three pages more.
    size_t reserve = s.splice == BL_SPLICE_LIBFUSE ? 4 * 4096 : 4096;
    if (pipe_bytes >= reserve + 4096 && pipe_bytes < MAX_REPLY + reserve) {
        s.max_read = (unsigned)(pipe_bytes - reserve);
        snprintf(max_read, sizeof(max_read), "max_read=%u", s.max_read);
        argv[argc++] = "-o";
        argv[argc++] = max_read;
    }
    if (opts->debug) argv[argc++] = "-d";
    argv[argc] = NULL;
    struct fuse_args args = FUSE_ARGS_INIT(argc, argv);

    int status = 1;
    struct fuse_operations with_read_buf = ops;
    with_read_buf.read_buf = op_read_buf;
    const struct fuse_operations *chosen = (s.splice == BL_SPLICE_LIBFUSE && cb->read_segments) ? &with_read_buf : &ops;
    struct fuse *f = fuse_new(&args, chosen, sizeof(ops), &s);
    if (!f) goto out;
    if (fuse_mount(f, mountpoint) != 0) { status = 2; goto destroy; }
    if (fuse_daemonize(opts->foreground) != 0) { status = 3; goto unmount; }
    struct fuse_session *se = fuse_get_session(f);
    if (fuse_set_signal_handlers(se) != 0) { status = 4; goto unmount; }
    s.fusefd = fuse_session_fd(se);
    if (s.passthrough) {
        // Before the loop reads INIT. The same descriptor; libfuse now writes replies through us.
        static const struct fuse_custom_io io = {.writev = io_writev, .read = io_read};
        if (fuse_session_custom_io(se, &io, s.fusefd) != 0) s.passthrough = 0;
    }
    // The loop returns the number of the signal that ended it (a clean unmount) or <0 on error.
    int res;
    if (s.splice == BL_SPLICE_OWN) res = loop_own(se, &s, opts->single_thread ? 1 : WORKERS);
    else res = opts->single_thread ? fuse_loop(f) : fuse_loop_mt(f, 0);
    status = res < 0 ? 5 : 0;
    backing_close_all(&s);
    fuse_remove_signal_handlers(se);
unmount:
    fuse_unmount(f);
destroy:
    fuse_destroy(f);
out:
    fuse_opt_free_args(&args);
    close(s.backing_fd);
    pthread_mutex_destroy(&s.backing_lock);
    return status;
}
