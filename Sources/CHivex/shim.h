// libhivex (Windows registry hives) for Swift; imports cleanly, only the flags are re-exported.
#include <stdint.h>
#include <hivex.h>

static const int CH_OPEN_WRITE = HIVEX_OPEN_WRITE;
