// BootLab as an nbdkit *filter* over the user's own source plugin (`bootlab serve` when the
// plugin file's source is `nbdkit:PLUGIN[:ARG…]`; docs/bring-your-own-format.md, "Serving in one
// process"). One nbdkit runs the user's plugin with this filter on top: the filter answers every
// request from BootLab's layer stack (the same Swift code as the plugin, CNBDKit/plugin.c), and the
// stack's bottom reads the source through `next->pread` on the calling thread — no socket, no
// second process.
//
// The plugin below is opened lazily, once, in a *shared* context (`nbdkit_next_context_open`),
// at the first read of the source (the first payload read: deferred open); connections do not
// open it (`.open` does not call next). Hence every callback that could reach the plugin is
// defined here: nbdkit would otherwise forward it to a connection's (absent) next context.
#include <nbdkit-filter.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "CNBDKit.h"

#define PREFIX "bootlab-"

static nbdkit_backend *source_backend;
static nbdkit_next *source_next;
static pthread_mutex_t source_lock = PTHREAD_MUTEX_INITIALIZER;
static int thread_model = NBDKIT_THREAD_MODEL_PARALLEL;
// Serializes reads of a plugin whose thread model is below parallel (reads may come from any
// request thread; nbdkit's own locks already serialize requests then, this is belt and braces).
static pthread_mutex_t serial_lock = PTHREAD_MUTEX_INITIALIZER;

// The parameters nbdkit passed down to the plugin (what the pointer's source spec must match).
static char **passed_keys, **passed_values;
static int passed_count;

// The source watchdog (see watch() below).
static atomic_int in_flight;
static atomic_ulong completed;
static atomic_int starting;
static _Atomic double watch_seconds = 60;
static pthread_mutex_t watch_lock = PTHREAD_MUTEX_INITIALIZER;
// The process whose watchdog thread runs (a fork — nbdkit daemonizing — has none).
static pid_t watch_pid;
static void *watch(void *unused);
static int start_watchdog(void);

static int f_config(nbdkit_next_config *next, nbdkit_backend *nxdata, const char *key, const char *value) {
    if (watch_pid != getpid()) {
        atomic_store(&starting, 1);
        if (start_watchdog() == -1) return -1;
    }
    if (strncmp(key, PREFIX, strlen(PREFIX)) == 0) {
        // Known before the plugin's config_complete runs (the watchdog bounds it).
        if (strcmp(key, PREFIX "source-timeout") == 0) bl_filter_set_timeout(strtod(value, NULL));
        return bl_swift_config(key + strlen(PREFIX), value);
    }
    char **k = realloc(passed_keys, (passed_count + 1) * sizeof *k);
    if (k) passed_keys = k;
    char **v = realloc(passed_values, (passed_count + 1) * sizeof *v);
    if (v) passed_values = v;
    if (!k || !v) { nbdkit_error("bootlab: out of memory"); return -1; }
    passed_keys[passed_count] = strdup(key);
    passed_values[passed_count] = strdup(value);
    if (!passed_keys[passed_count] || !passed_values[passed_count]) { nbdkit_error("bootlab: out of memory"); return -1; }
    passed_count++;
    return next(nxdata, key, value);
}

static int f_config_complete(nbdkit_next_config_complete *next, nbdkit_backend *nxdata) {
    if (next(nxdata) == -1) return -1;
    return bl_swift_filter_config_complete();
}

int bl_filter_passed_count(void) { return passed_count; }
const char *bl_filter_passed_key(int i) { return passed_keys[i]; }
const char *bl_filter_passed_value(int i) { return passed_values[i]; }

static int f_get_ready(int model) {
    thread_model = model;
    return bl_swift_get_ready();
}

static int f_after_fork(nbdkit_backend *backend) {
    source_backend = backend;
    // Ready to serve. A daemonized nbdkit (not bootlab serve's --foreground) lost the thread in
    // the fork: start it again here.
    atomic_store(&starting, 0);
    return start_watchdog();
}

static void f_cleanup(nbdkit_backend *backend) {
    (void)backend;
    pthread_mutex_lock(&source_lock);
    if (source_next) {
        source_next->finalize(source_next);
        nbdkit_next_context_close(source_next);
        source_next = NULL;
    }
    pthread_mutex_unlock(&source_lock);
}

static void f_unload(void) { bl_swift_unload(); }

static int handle_token;

static void *f_open(nbdkit_next_open *next, nbdkit_context *context, int readonly, const char *exportname, int is_tls) {
    (void)next; (void)exportname; (void)is_tls;
    pthread_mutex_lock(&source_lock);
    if (!source_backend) source_backend = nbdkit_context_get_backend(context);
    pthread_mutex_unlock(&source_lock);
    if (bl_swift_open(readonly) != 0) return NULL;
    return &handle_token;
}

int bl_filter_source_open(void) {
    pthread_mutex_lock(&source_lock);
    int r = 0;
    if (!source_next) {
        if (!source_backend) {
            nbdkit_error("bootlab: the source plugin is not reachable (no backend)");
            r = -1;
        } else {
            // Read-only, the default export, shared by every connection. The plugin's open is
            // watched like a read (a plugin may hang connecting to its data).
            bl_filter_watch_begin();
            nbdkit_next *n = nbdkit_next_context_open(source_backend, 1, "", 1);
            if (!n) {
                r = -1;
            } else if (n->prepare(n) == -1) {
                nbdkit_next_context_close(n);
                r = -1;
            } else {
                source_next = n;
            }
            bl_filter_watch_end();
        }
    }
    pthread_mutex_unlock(&source_lock);
    return r;
}

int64_t bl_filter_source_size(void) { return source_next ? source_next->get_size(source_next) : -1; }

int bl_filter_source_pread(void *buf, uint32_t count, uint64_t offset, int *err) {
    nbdkit_next *n = source_next;
    if (!n) { *err = EIO; return -1; }
    int serial = thread_model < NBDKIT_THREAD_MODEL_PARALLEL;
    if (serial) pthread_mutex_lock(&serial_lock);
    bl_filter_watch_begin();
    int r = n->pread(n, buf, count, offset, 0, err);
    bl_filter_watch_end();
    if (serial) pthread_mutex_unlock(&serial_lock);
    return r;
}

// A hung source plugin. The two-process path bounds its start and every read by --source-timeout;
// here the plugin starts inside this nbdkit and its reads run on nbdkit's own request threads,
// which cannot be interrupted. A watchdog thread bounds both: (1) from the filter's first
// configuration call until nbdkit is ready to serve (after_fork), and (2) while serving, when
// the plugin's open or reads of it are in flight and none completed for the timeout. Either way it says what
// hangs and ends the server — clients see their connection close (an I/O error), never a hang.

void bl_filter_watch_begin(void) { atomic_fetch_add(&in_flight, 1); }
void bl_filter_watch_end(void) { atomic_fetch_sub(&in_flight, 1); atomic_fetch_add(&completed, 1); }

static void give_up(const char *what) {
    char message[320];
    int n = snprintf(message, sizeof message,
                     "nbdkit: error: bootlab: the source plugin %s within %g s (it hangs; raise --source-timeout if it "
                     "is only slow): stopping the server\n", what, atomic_load(&watch_seconds));
    if (n > 0) { ssize_t w = write(2, message, (size_t)n < sizeof message ? (size_t)n : sizeof message - 1); (void)w; }
    _exit(1);
}

static void *watch(void *unused) {
    (void)unused;
    unsigned long seen = atomic_load(&completed);
    double stalled = 0, started = 0;
    for (;;) {
        struct timespec t = { 0, 100 * 1000 * 1000 };
        nanosleep(&t, NULL);
        double limit = atomic_load(&watch_seconds);
        if (atomic_load(&starting)) {
            started += 0.1;
            if (started >= limit) give_up("did not start serving");
            continue;
        }
        unsigned long now = atomic_load(&completed);
        if (atomic_load(&in_flight) > 0 && now == seen) {
            stalled += 0.1;
            if (stalled >= limit) give_up("did not complete an open or a read");
        } else {
            stalled = 0;
            seen = now;
        }
    }
    return NULL;
}

static int start_watchdog(void) {
    pthread_mutex_lock(&watch_lock);
    int r = 0;
    if (watch_pid != getpid()) {
        pthread_t thread;
        if (pthread_create(&thread, NULL, watch, NULL) != 0) {
            nbdkit_error("bootlab: cannot start the source watchdog");
            r = -1;
        } else {
            pthread_detach(thread);
            watch_pid = getpid();
        }
    }
    pthread_mutex_unlock(&watch_lock);
    return r;
}

int bl_filter_set_timeout(double seconds) {
    if (seconds > 0) atomic_store(&watch_seconds, seconds);
    return 0;
}

static int64_t f_get_size(nbdkit_next *next, void *h) { (void)next; (void)h; return bl_swift_get_size(); }
static const char *f_export_description(nbdkit_next *next, void *h) { (void)next; (void)h; return NULL; }
static int f_block_size(nbdkit_next *next, void *h, uint32_t *minimum, uint32_t *preferred, uint32_t *maximum) {
    (void)next; (void)h;
    *minimum = *preferred = *maximum = 0;
    return 0;
}
static int f_can_write(nbdkit_next *next, void *h) { (void)next; (void)h; return bl_swift_can_write(); }
static int f_can_flush(nbdkit_next *next, void *h) { (void)next; (void)h; return 1; }
static int f_is_rotational(nbdkit_next *next, void *h) { (void)next; (void)h; return 0; }
static int f_can_trim(nbdkit_next *next, void *h) { (void)next; (void)h; return 0; }
static int f_can_zero(nbdkit_next *next, void *h) { (void)next; (void)h; return NBDKIT_ZERO_NONE; }
static int f_can_fast_zero(nbdkit_next *next, void *h) { (void)next; (void)h; return 0; }
static int f_can_extents(nbdkit_next *next, void *h) { (void)next; (void)h; return 1; }
static int f_can_fua(nbdkit_next *next, void *h) { (void)next; (void)h; return NBDKIT_FUA_NATIVE; }
static int f_can_multi_conn(nbdkit_next *next, void *h) { (void)next; (void)h; return 1; }
static int f_can_cache(nbdkit_next *next, void *h) { (void)next; (void)h; return NBDKIT_CACHE_NONE; }

static int f_pread(nbdkit_next *next, void *h, void *buf, uint32_t count, uint64_t offset, uint32_t flags, int *err) {
    (void)next; (void)h; (void)flags;
    if (bl_swift_pread(buf, count, offset) == 0) return 0;
    *err = bl_nbdkit_last_errno();
    return -1;
}

static int f_pwrite(nbdkit_next *next, void *h, const void *buf, uint32_t count, uint64_t offset, uint32_t flags, int *err) {
    (void)next; (void)h;
    if (bl_swift_pwrite(buf, count, offset, (flags & NBDKIT_FLAG_FUA) != 0) == 0) return 0;
    *err = bl_nbdkit_last_errno();
    return -1;
}

static int f_flush(nbdkit_next *next, void *h, uint32_t flags, int *err) {
    (void)next; (void)h; (void)flags;
    if (bl_swift_flush() == 0) return 0;
    *err = bl_nbdkit_last_errno();
    return -1;
}

// Never advertised (can_trim, can_zero, can_cache say no); defined so that nothing reaches the
// connection's absent next context.
static int f_unsupported(int *err) { *err = EOPNOTSUPP; return -1; }
static int f_trim(nbdkit_next *next, void *h, uint32_t count, uint64_t offset, uint32_t flags, int *err) {
    (void)next; (void)h; (void)count; (void)offset; (void)flags; return f_unsupported(err);
}
static int f_zero(nbdkit_next *next, void *h, uint32_t count, uint64_t offset, uint32_t flags, int *err) {
    (void)next; (void)h; (void)count; (void)offset; (void)flags; return f_unsupported(err);
}
static int f_cache(nbdkit_next *next, void *h, uint32_t count, uint64_t offset, uint32_t flags, int *err) {
    (void)next; (void)h; (void)count; (void)offset; (void)flags; return f_unsupported(err);
}

static int f_extents(nbdkit_next *next, void *h, uint32_t count, uint64_t offset, uint32_t flags,
                     struct nbdkit_extents *extents, int *err) {
    (void)next; (void)h;
    if (bl_swift_extents(count, offset, (flags & NBDKIT_FLAG_REQ_ONE) != 0, extents) == 0) return 0;
    *err = bl_nbdkit_last_errno();
    return -1;
}

static struct nbdkit_filter filter = {
    .name = "bootlab",
    .longname = "BootLab exposure over a source plugin",
    .description = "Serves a BootLab plugin file whose source is the plugin below this filter",
    .config = f_config,
    .config_complete = f_config_complete,
    .config_help = PREFIX "file=PATH       the plugin file to serve (its source: the plugin below)\n"
                   PREFIX "raw=true        serve the raw virtual disk instead of the native format\n"
                   PREFIX "overlay=PATH    take writes into this write overlay\n"
                   PREFIX "KEY=VALUE       any other parameter of BootLab's plugin, prefixed",
    .get_ready = f_get_ready,
    .after_fork = f_after_fork,
    .cleanup = f_cleanup,
    .unload = f_unload,
    .open = f_open,
    .get_size = f_get_size,
    .export_description = f_export_description,
    .block_size = f_block_size,
    .can_write = f_can_write,
    .can_flush = f_can_flush,
    .is_rotational = f_is_rotational,
    .can_trim = f_can_trim,
    .can_zero = f_can_zero,
    .can_fast_zero = f_can_fast_zero,
    .can_extents = f_can_extents,
    .can_fua = f_can_fua,
    .can_multi_conn = f_can_multi_conn,
    .can_cache = f_can_cache,
    .pread = f_pread,
    .pwrite = f_pwrite,
    .flush = f_flush,
    .trim = f_trim,
    .zero = f_zero,
    .cache = f_cache,
    .extents = f_extents,
};

NBDKIT_REGISTER_FILTER(filter)
