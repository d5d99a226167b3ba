// libguestfs for Swift. The *_BITMASK macros use UINT64_C, which Swift's importer cannot
// evaluate, so the ones we use are re-exported as constants.
#include <stdint.h>
#include <guestfs.h>

static const uint64_t CG_ADD_DRIVE_OPTS_READONLY = GUESTFS_ADD_DRIVE_OPTS_READONLY_BITMASK;
static const uint64_t CG_ADD_DRIVE_OPTS_FORMAT = GUESTFS_ADD_DRIVE_OPTS_FORMAT_BITMASK;
static const uint64_t CG_ADD_DRIVE_OPTS_CACHEMODE = GUESTFS_ADD_DRIVE_OPTS_CACHEMODE_BITMASK;
static const uint64_t CG_ADD_DRIVE_OPTS_DISCARD = GUESTFS_ADD_DRIVE_OPTS_DISCARD_BITMASK;
