/* A deliberately buggy VHDX region-table reader, for `bootlab fuzz` demonstrations and CI
 * (ci/test.d/70-fuzz-cli.sh, docs/fuzzing.md). Written for BootLab; not derived from any reader.
 *
 * It checks what careful readers check — the file signature, the region table's signature and its
 * CRC-32C — and then trusts EntryCount, which the checksum covers: entries are copied into a
 * fixed array of 16 (MS-VHDX allows 2047). A byte flipper that does not recompute the CRC-32C
 * almost never gets past the checksum; a mutator that does reaches the copy at once.
 *
 * Exit 0: printed the regions; exit 1: rejected (bad signature, checksum, count > 2047, short file).
 * Build: cc -O1 -g -fsanitize=address -o buggy_vhdx_regions buggy_vhdx_regions.c (ASan reports
 * the overflow) or without ASan (the stack protector aborts, or the overflow goes unnoticed). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct region { uint8_t guid[16]; uint64_t offset; uint32_t length; uint32_t required; };

static uint32_t crc32c(const uint8_t *p, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
    }
    return ~c;
}

static uint32_t le32(const uint8_t *p) { return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24; }
static uint64_t le64(const uint8_t *p) { return le32(p) | (uint64_t)le32(p + 4) << 32; }

static int read_at(FILE *f, long off, uint8_t *buf, size_t n) {
    return fseek(f, off, SEEK_SET) == 0 && fread(buf, 1, n, f) == n;
}

static int list_regions(const uint8_t *t) {
    struct region regions[16];
    uint32_t count = le32(t + 8);
    if (count > 2047) { fprintf(stderr, "region table: %u entries exceed 2047\n", count); return 1; }
    for (uint32_t i = 0; i < count; i++) {             /* BUG: trusts count (≤ 2047) with room for 16 */
        const uint8_t *e = t + 16 + 32 * i;
        memcpy(regions[i].guid, e, 16);
        regions[i].offset = le64(e + 16);
        regions[i].length = le32(e + 24);
        regions[i].required = le32(e + 28);
    }
    for (uint32_t i = 0; i < count && i < 16; i++)
        printf("region %u: offset %llu length %u required %u\n", i, (unsigned long long)regions[i].offset,
               regions[i].length, regions[i].required);
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: %s FILE.vhdx\n", argv[0]); return 1; }
    FILE *f = fopen(argv[1], "rb");
    if (!f) { perror(argv[1]); return 1; }
    static uint8_t sig[8], table[65536];
    if (!read_at(f, 0, sig, 8) || memcmp(sig, "vhdxfile", 8) != 0) { fprintf(stderr, "not a VHDX file\n"); return 1; }
    if (!read_at(f, 0x30000, table, sizeof table)) { fprintf(stderr, "short file\n"); return 1; }
    if (memcmp(table, "regi", 4) != 0) { fprintf(stderr, "region table: bad signature\n"); return 1; }
    uint32_t stored = le32(table + 4);
    memset(table + 4, 0, 4);
    if (crc32c(table, sizeof table) != stored) { fprintf(stderr, "region table: checksum mismatch\n"); return 1; }
    fclose(f);
    return list_regions(table);
}
