#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>
#include <errno.h>
#include <stddef.h>
#include "CNBDKit.h"

// Every connection shares one source and one overlay, so requests run in parallel and a flush on
// any connection makes every connection's writes durable (what multi-conn promises).
#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL

static int handle_token;

static void *p_open(int readonly) {
    if (bl_swift_open(readonly) != 0) return NULL;
    return &handle_token;
}

static int64_t p_get_size(void *h) { (void)h; return bl_swift_get_size(); }
static int p_can_write(void *h) { (void)h; return bl_swift_can_write(); }
static int p_can_flush(void *h) { (void)h; return 1; }
static int p_can_multi_conn(void *h) { (void)h; return 1; }
static int p_can_extents(void *h) { (void)h; return 1; }
static int p_can_fua(void *h) { (void)h; return NBDKIT_FUA_NATIVE; }

static int p_pread(void *h, void *buf, uint32_t count, uint64_t offset, uint32_t flags) {
    (void)h; (void)flags;
    return bl_swift_pread(buf, count, offset);
}

static int p_pwrite(void *h, const void *buf, uint32_t count, uint64_t offset, uint32_t flags) {
    (void)h;
    return bl_swift_pwrite(buf, count, offset, (flags & NBDKIT_FLAG_FUA) != 0);
}

static int p_flush(void *h, uint32_t flags) { (void)h; (void)flags; return bl_swift_flush(); }

static int p_extents(void *h, uint32_t count, uint64_t offset, uint32_t flags, struct nbdkit_extents *e) {
    (void)h;
    return bl_swift_extents(count, offset, (flags & NBDKIT_FLAG_REQ_ONE) != 0, e);
}

// The errno of the last error on this thread: a filter returns it through its `err` argument.
static _Thread_local int last_errno = EIO;

void bl_nbdkit_error(const char *message, int errnum) {
    nbdkit_error("%s", message);
    last_errno = errnum ? errnum : EIO;
    nbdkit_set_error(last_errno);
}

int bl_nbdkit_last_errno(void) { return last_errno; }

void bl_nbdkit_debug(const char *message) { nbdkit_debug("%s", message); }

int bl_nbdkit_add_extent(void *extents, uint64_t offset, uint64_t length, int type) {
    uint32_t t = type == 0 ? 0 : type == 1 ? (NBDKIT_EXTENT_HOLE | NBDKIT_EXTENT_ZERO) : NBDKIT_EXTENT_ZERO;
    return nbdkit_add_extent((struct nbdkit_extents *)extents, offset, length, t);
}

static struct nbdkit_plugin plugin = {
    .name = "bootlab",
    .longname = "BootLab block-source server",
    .description = "Serves a BootLab block source (raw file, or a plugin file's disk) with an optional write overlay",
    .config = bl_swift_config,
    .config_complete = bl_swift_config_complete,
    .config_help = "file=PATH       the file to serve\n"
                   "raw=true        serve the raw virtual disk instead of the native format\n"
                   "overlay=PATH    take writes into this write overlay (created if absent)\n"
                   "stats=PATH|-    write source statistics as JSON at exit and on SIGUSR1",
    .magic_config_key = "file",
    .get_ready = bl_swift_get_ready,
    .open = p_open,
    .get_size = p_get_size,
    .can_write = p_can_write,
    .can_flush = p_can_flush,
    .can_multi_conn = p_can_multi_conn,
    .can_extents = p_can_extents,
    .can_fua = p_can_fua,
    .pread = p_pread,
    .pwrite = p_pwrite,
    .flush = p_flush,
    .extents = p_extents,
    .unload = bl_swift_unload,
    .errno_is_preserved = 0,
};

NBDKIT_REGISTER_PLUGIN(plugin)
