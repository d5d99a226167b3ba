/* Edge counter for programs built with clang -fsanitize-coverage=trace-pc-guard (BootLab's
 * `bootlab fuzz` coverage measurements, docs/fuzzing.md). Not part of the Swift target: it is
 * linked into the instrumented reader we did not write (ci/setup.d/fuzz.sh).
 *
 * Every guard gets a number at start-up; reaching an edge sets one byte. At exit, when
 * $BOOTLAB_COV_FILE is set, the bytes of guards 1…N are written there (1 = reached), so the
 * fuzzer can take the union over a campaign. A process killed by a signal writes nothing. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define BL_MAX_GUARDS (1u << 20)
static uint8_t bl_hit[BL_MAX_GUARDS];
static uint32_t bl_count;

void __sanitizer_cov_trace_pc_guard_init(uint32_t *start, uint32_t *stop) {
    if (start == stop || *start) return;
    for (uint32_t *g = start; g < stop; g++) {
        if (bl_count + 1 < BL_MAX_GUARDS) *g = ++bl_count; else *g = 0;
    }
}

void __sanitizer_cov_trace_pc_guard(uint32_t *guard) {
    bl_hit[*guard] = 1;
}

__attribute__((destructor)) static void bl_write_coverage(void) {
    const char *path = getenv("BOOTLAB_COV_FILE");
    if (!path || !*path || bl_count == 0) return;
    FILE *f = fopen(path, "wb");
    if (!f) return;
    fwrite(bl_hit + 1, 1, bl_count, f);
    fclose(f);
}
