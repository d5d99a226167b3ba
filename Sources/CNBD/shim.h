// libnbd for Swift (the NBD client of external backup sources). NBD_NULL_COMPLETION is a
// compound literal the importer cannot use: the asynchronous read is wrapped here.
#include <stddef.h>
#include <stdint.h>
#include <libnbd.h>

static inline int64_t bl_nbd_aio_pread(struct nbd_handle *h, void *buf, size_t count, uint64_t offset) {
    return nbd_aio_pread(h, buf, count, offset, NBD_NULL_COMPLETION, 0);
}
