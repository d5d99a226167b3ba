// A tiny extern "C" surface over Crypto++. Every entry point catches Crypto++ exceptions: an
// exception that reaches Swift would abort the process. Functions return 0 on success; on failure
// they return non-zero and bl_last_error() names the reason (thread-local).
#ifndef BOOTLAB_CCRYPTOSHIM_H
#define BOOTLAB_CCRYPTOSHIM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/// The message of the last failure on this thread ("" when none).
const char *bl_last_error(void);

/// CRC-32C (Castagnoli), reflected 0x82F63B78, init 0xFFFFFFFF, final XOR 0xFFFFFFFF, through the
/// public CryptoPP::CRC32C class only. That class cannot resume from a previous result, so a
/// checksum over several pieces (e.g. a structure with its CRC field taken as zero) is one context
/// updated with the pieces in order: new, update..., final, free.
/// One buffer: writes the CRC to *out; 0 on success.
int bl_crc32c(const void *data, size_t length, uint32_t *out);
typedef struct bl_crc32c_ctx bl_crc32c_ctx;
/// NULL on failure (bl_last_error says why).
bl_crc32c_ctx *bl_crc32c_new(void);
int bl_crc32c_update(bl_crc32c_ctx *ctx, const void *data, size_t length);
/// Writes the CRC of everything updated so far and restarts the context at the initial value.
int bl_crc32c_final(bl_crc32c_ctx *ctx, uint32_t *out);
void bl_crc32c_free(bl_crc32c_ctx *ctx);

/// CRC-32 (IEEE 802.3, reflected 0xEDB88320, as GPT and zlib use it) of one buffer.
uint32_t bl_crc32(const void *data, size_t length);

/// SHA-256 of one buffer.
void bl_sha256(const void *data, size_t length, uint8_t out[32]);

/// Incremental SHA-256.
typedef struct bl_sha256_ctx bl_sha256_ctx;
bl_sha256_ctx *bl_sha256_new(void);
void bl_sha256_update(bl_sha256_ctx *ctx, const void *data, size_t length);
/// Writes the digest and resets the context for reuse.
void bl_sha256_final(bl_sha256_ctx *ctx, uint8_t out[32]);
void bl_sha256_free(bl_sha256_ctx *ctx);

/// HMAC-SHA-256.
int bl_hmac_sha256(const void *key, size_t keyLength, const void *data, size_t length, uint8_t out[32]);

/// AES-256-GCM with a 16-byte tag. A context holds one key; it is not thread-safe (use one per thread).
typedef struct bl_gcm_ctx bl_gcm_ctx;
bl_gcm_ctx *bl_gcm_new(const uint8_t key[32]);
void bl_gcm_free(bl_gcm_ctx *ctx);
int bl_gcm_encrypt(bl_gcm_ctx *ctx, const uint8_t *iv, size_t ivLength,
                   const void *aad, size_t aadLength,
                   const void *plaintext, size_t length,
                   uint8_t *ciphertext, uint8_t tag[16]);
/// Returns 0 when the tag verifies, 1 when it does not (plaintext then undefined), -1 on error.
int bl_gcm_decrypt(bl_gcm_ctx *ctx, const uint8_t *iv, size_t ivLength,
                   const void *aad, size_t aadLength,
                   const void *ciphertext, size_t length,
                   const uint8_t tag[16], uint8_t *plaintext);

/// scrypt (RFC 7914).
int bl_scrypt(const void *passphrase, size_t passphraseLength, const void *salt, size_t saltLength,
              uint64_t costN, uint32_t blockSizeR, uint32_t parallelismP,
              uint8_t *out, size_t outLength);

/// HKDF-SHA-256 (RFC 5869).
int bl_hkdf_sha256(const void *ikm, size_t ikmLength, const void *salt, size_t saltLength,
                   const void *info, size_t infoLength, uint8_t *out, size_t outLength);

/// Bytes from the operating system's RNG.
int bl_random_bytes(uint8_t *out, size_t length);

#ifdef __cplusplus
}
#endif
#endif
