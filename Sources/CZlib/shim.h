// zlib (Debian's zlib1g-dev): deflate for VMDK streamOptimized grains, inflate for compressed
// VMDK grains and qcow2 clusters.
#include <zlib.h>
