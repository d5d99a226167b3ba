// Implementation of CCryptoShim.h over Crypto++. No cryptography is written here by hand.
#include "CCryptoShim.h"

#include <cryptopp/aes.h>
#include <cryptopp/cpu.h>
#include <cryptopp/crc.h>
#include <cryptopp/gcm.h>
#include <cryptopp/hkdf.h>
#include <cryptopp/hmac.h>
#include <cryptopp/osrng.h>
#include <cryptopp/scrypt.h>
#include <cryptopp/sha.h>

#include <string>

namespace CryptoPP {
// Exported by libcryptopp but not declared in its public headers; it continues a CRC-32C from an
// arbitrary (non-finalized) state, which the public CRC32C class cannot.
void CRC32C_Update_SSE42(const byte *s, size_t n, word32 &c);
}

namespace {
thread_local std::string lastError;

int fail(const char *where, const std::exception &e) {
    lastError = std::string(where) + ": " + e.what();
    return -1;
}
}  // namespace

struct bl_sha256_ctx { CryptoPP::SHA256 hash; };
struct bl_gcm_ctx {
    CryptoPP::GCM<CryptoPP::AES>::Encryption enc;
    CryptoPP::GCM<CryptoPP::AES>::Decryption dec;
};

extern "C" {

const char *bl_last_error(void) { return lastError.c_str(); }

uint32_t bl_crc32c_update(uint32_t crc, const void *data, size_t length) {
    const auto *p = static_cast<const CryptoPP::byte *>(data);
    if (CryptoPP::HasSSE42()) {
        CryptoPP::word32 state = ~crc;
        CryptoPP::CRC32C_Update_SSE42(p, length, state);
        return ~state;
    }
    // Portable path: the public class only starts from the standard initial value, so a
    // continuation re-derives nothing; callers on such CPUs must not rely on seeds != 0.
    CryptoPP::CRC32C c;
    if (crc != 0) {
        lastError = "bl_crc32c_update: continuing a CRC needs SSE4.2";
        return 0;
    }
    c.Update(p, length);
    CryptoPP::word32 out;
    c.Final(reinterpret_cast<CryptoPP::byte *>(&out));
    return out;
}

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
