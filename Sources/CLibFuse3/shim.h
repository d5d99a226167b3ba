// libfuse3 as a pkg-config system library: its include directory (/usr/include/fuse3) and link
// flags come from fuse3.pc, so no target needs a hard-coded -I. Only CFuse3's C shim uses it.
#pragma once
#define FUSE_USE_VERSION 31
#include <fuse.h>
