#define _GNU_SOURCE
#include "CFuse3.h"
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_WATCHED 4

typedef struct watch {
    int signum;
    int pipe_r, pipe_w;
    void (*cb)(void *);
    void *ctx;
} watch;

static watch watches[MAX_WATCHED];
static int nwatches;

static void handler(int signum) {
    int saved = errno;
    for (int i = 0; i < nwatches; i++) {
        if (watches[i].signum == signum) {
            char c = 1;
            ssize_t r = write(watches[i].pipe_w, &c, 1);
            (void)r;
        }
    }
    errno = saved;
}

static void *waiter(void *p) {
    watch *w = (watch *)p;
    char c;
    for (;;) {
        ssize_t n = read(w->pipe_r, &c, 1);
        if (n == 1) w->cb(w->ctx);
        else if (n < 0 && errno == EINTR) continue;
        else return NULL;
    }
}

int bl_watch_signal(int signum, void (*cb)(void *ctx), void *ctx) {
    if (nwatches >= MAX_WATCHED) return -ENOSPC;
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) return -errno;
    watch *w = &watches[nwatches];
    w->signum = signum; w->pipe_r = fds[0]; w->pipe_w = fds[1]; w->cb = cb; w->ctx = ctx;
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    // The thread must not take the signal itself: it blocks in read() and would see EINTR only.
    int r = pthread_create(&t, &attr, waiter, w);
    pthread_attr_destroy(&attr);
    if (r != 0) { close(fds[0]); close(fds[1]); return -r; }
    nwatches++;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = handler;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(signum, &sa, NULL) != 0) return -errno;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, signum);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
    return 0;
}

void bl_reset_server_signals(void) {
    int sigs[] = {SIGINT, SIGTERM, SIGHUP};
    sigset_t set;
    sigemptyset(&set);
    for (unsigned i = 0; i < sizeof sigs / sizeof sigs[0]; i++) {
        signal(sigs[i], SIG_DFL);
        sigaddset(&set, sigs[i]);
    }
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
}
