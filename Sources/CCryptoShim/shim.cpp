// Implementation of CCryptoShim.h over Crypto++. No cryptography is written here by hand.
#include "CCryptoShim.h"

#include <cryptopp/aes.h>
#include <cryptopp/crc.h>
#include <cryptopp/gcm.h>
#include <cryptopp/hkdf.h>
#include <cryptopp/hmac.h>
#include <cryptopp/osrng.h>
#include <cryptopp/scrypt.h>
#include <cryptopp/sha.h>

#include <string>

namespace {
thread_local std::string lastError;

int fail(const char *where, const std::exception &e) {
    lastError = std::string(where) + ": " + e.what();
    return -1;
}
}  // namespace

struct bl_sha256_ctx { CryptoPP::SHA256 hash; };
// One public CryptoPP::CRC32C per computation: the class picks its SSE4.2/ARMv8/table path itself
// and cannot start from a seed, so a checksum over several pieces is one object fed in order.
struct bl_crc32c_ctx { CryptoPP::CRC32C crc; };
struct bl_gcm_ctx {
    CryptoPP::GCM<CryptoPP::AES>::Encryption enc;
    CryptoPP::GCM<CryptoPP::AES>::Decryption dec;
};

extern "C" {

const char *bl_last_error(void) { return lastError.c_str(); }

namespace {
// Crypto++ writes the CRC as little-endian bytes (as it is stored in VHDX and .bli structures);
// assemble the integer explicitly so the result does not depend on the host's byte order.
uint32_t finishCRC32C(CryptoPP::CRC32C &c) {
    CryptoPP::byte out[4];
    c.Final(out);  // also restarts the object at the initial value
    return static_cast<uint32_t>(out[0]) | static_cast<uint32_t>(out[1]) << 8 |
           static_cast<uint32_t>(out[2]) << 16 | static_cast<uint32_t>(out[3]) << 24;
}
}  // namespace

int bl_crc32c(const void *data, size_t length, uint32_t *out) {
    try {
        CryptoPP::CRC32C c;
        c.Update(static_cast<const CryptoPP::byte *>(data), length);
        *out = finishCRC32C(c);
        return 0;
    } catch (const std::exception &e) { return fail("crc32c", e); }
}

bl_crc32c_ctx *bl_crc32c_new(void) {
    try {
        return new bl_crc32c_ctx();
    } catch (const std::exception &e) { fail("crc32c new", e); return nullptr; }
}

int bl_crc32c_update(bl_crc32c_ctx *ctx, const void *data, size_t length) {
    try {
        ctx->crc.Update(static_cast<const CryptoPP::byte *>(data), length);
        return 0;
    } catch (const std::exception &e) { return fail("crc32c update", e); }
}

int bl_crc32c_final(bl_crc32c_ctx *ctx, uint32_t *out) {
    try {
        *out = finishCRC32C(ctx->crc);
        return 0;
    } catch (const std::exception &e) { return fail("crc32c final", e); }
}

void bl_crc32c_free(bl_crc32c_ctx *ctx) { delete ctx; }

void bl_sha256(const void *data, size_t length, uint8_t out[32]) {
    CryptoPP::SHA256 h;
    h.CalculateDigest(out, static_cast<const CryptoPP::byte *>(data), length);
}

bl_sha256_ctx *bl_sha256_new(void) { return new bl_sha256_ctx(); }
void bl_sha256_update(bl_sha256_ctx *ctx, const void *data, size_t length) {
    ctx->hash.Update(static_cast<const CryptoPP::byte *>(data), length);
}
void bl_sha256_final(bl_sha256_ctx *ctx, uint8_t out[32]) { ctx->hash.Final(out); }
void bl_sha256_free(bl_sha256_ctx *ctx) { delete ctx; }

int bl_hmac_sha256(const void *key, size_t keyLength, const void *data, size_t length, uint8_t out[32]) {
    try {
        CryptoPP::HMAC<CryptoPP::SHA256> mac(static_cast<const CryptoPP::byte *>(key), keyLength);
        mac.CalculateDigest(out, static_cast<const CryptoPP::byte *>(data), length);
        return 0;
    } catch (const std::exception &e) { return fail("hmac-sha256", e); }
}

bl_gcm_ctx *bl_gcm_new(const uint8_t key[32]) {
    try {
        auto *ctx = new bl_gcm_ctx();
        // A placeholder IV; every call resynchronizes with its own.
        const CryptoPP::byte iv[12] = {0};
        ctx->enc.SetKeyWithIV(key, 32, iv, sizeof iv);
        ctx->dec.SetKeyWithIV(key, 32, iv, sizeof iv);
        return ctx;
    } catch (const std::exception &e) { fail("aes-gcm key", e); return nullptr; }
}
void bl_gcm_free(bl_gcm_ctx *ctx) { delete ctx; }

int bl_gcm_encrypt(bl_gcm_ctx *ctx, const uint8_t *iv, size_t ivLength, const void *aad, size_t aadLength,
                   const void *plaintext, size_t length, uint8_t *ciphertext, uint8_t tag[16]) {
    try {
        ctx->enc.EncryptAndAuthenticate(ciphertext, tag, 16, iv, static_cast<int>(ivLength),
                                        static_cast<const CryptoPP::byte *>(aad), aadLength,
                                        static_cast<const CryptoPP::byte *>(plaintext), length);
        return 0;
    } catch (const std::exception &e) { return fail("aes-gcm encrypt", e); }
}

int bl_gcm_decrypt(bl_gcm_ctx *ctx, const uint8_t *iv, size_t ivLength, const void *aad, size_t aadLength,
                   const void *ciphertext, size_t length, const uint8_t tag[16], uint8_t *plaintext) {
    try {
        bool ok = ctx->dec.DecryptAndVerify(plaintext, tag, 16, iv, static_cast<int>(ivLength),
                                            static_cast<const CryptoPP::byte *>(aad), aadLength,
                                            static_cast<const CryptoPP::byte *>(ciphertext), length);
        if (!ok) { lastError = "aes-gcm: authentication tag mismatch"; return 1; }
        return 0;
    } catch (const std::exception &e) { return fail("aes-gcm decrypt", e); }
}

int bl_scrypt(const void *passphrase, size_t passphraseLength, const void *salt, size_t saltLength,
              uint64_t costN, uint32_t blockSizeR, uint32_t parallelismP, uint8_t *out, size_t outLength) {
    try {
        CryptoPP::Scrypt kdf;
        kdf.DeriveKey(out, outLength, static_cast<const CryptoPP::byte *>(passphrase), passphraseLength,
                      static_cast<const CryptoPP::byte *>(salt), saltLength, costN, blockSizeR, parallelismP);
        return 0;
    } catch (const std::exception &e) { return fail("scrypt", e); }
}

int bl_hkdf_sha256(const void *ikm, size_t ikmLength, const void *salt, size_t saltLength,
                   const void *info, size_t infoLength, uint8_t *out, size_t outLength) {
    try {
        CryptoPP::HKDF<CryptoPP::SHA256> kdf;
        kdf.DeriveKey(out, outLength, static_cast<const CryptoPP::byte *>(ikm), ikmLength,
                      static_cast<const CryptoPP::byte *>(salt), saltLength,
                      static_cast<const CryptoPP::byte *>(info), infoLength);
        return 0;
    } catch (const std::exception &e) { return fail("hkdf", e); }
}

int bl_random_bytes(uint8_t *out, size_t length) {
    try {
        CryptoPP::OS_GenerateRandomBlock(false, out, length);
        return 0;
    } catch (const std::exception &e) { return fail("random", e); }
}

uint32_t bl_crc32(const void *data, size_t length) {
    CryptoPP::CRC32 c;
    c.Update(static_cast<const CryptoPP::byte *>(data), length);
    CryptoPP::byte out[4];
    c.Final(out);  // Crypto++ emits the CRC little-endian
    return static_cast<uint32_t>(out[0]) | static_cast<uint32_t>(out[1]) << 8 |
           static_cast<uint32_t>(out[2]) << 16 | static_cast<uint32_t>(out[3]) << 24;
}

}  // extern "C"
