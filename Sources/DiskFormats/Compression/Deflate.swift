import BlockCore
import CZlib

/// zlib's deflate and inflate for the formats that compress payload units (VMDK streamOptimized
/// grains: zlib streams; qcow2 compressed clusters: raw deflate). Bounded: inflate never writes
/// past the caller's expected size and fails with a typed error on any damage.
public enum Deflate {
    public enum Framing: Sendable {
        /// RFC 1950 (zlib header and Adler-32): VMDK grains.
        case zlib
        /// RFC 1951 raw deflate: qcow2 compressed clusters.
        case raw
    }

    /// Compresses `input` (level 6, deterministic: zlib's output depends only on its input and
    /// parameters).
    public static func compress(_ input: UnsafeRawBufferPointer, framing: Framing = .zlib, level: Int32 = 6) -> [UInt8] {
        var stream = z_stream()
        let bits: Int32 = framing == .zlib ? 15 : -15
        guard deflateInit2_(&stream, level, Z_DEFLATED, bits, 8, Z_DEFAULT_STRATEGY, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            fatalError("deflateInit2 failed: zlib is unusable")  // only on out of memory or a broken zlib
        }
        defer { deflateEnd(&stream) }
        let bound = Int(deflateBound(&stream, uLong(input.count)))
        var out = [UInt8](repeating: 0, count: bound)
        let produced: Int = out.withUnsafeMutableBytes { o in
            stream.next_in = UnsafeMutablePointer(mutating: input.baseAddress?.assumingMemoryBound(to: Bytef.self))
            stream.avail_in = uInt(input.count)
            stream.next_out = o.baseAddress!.assumingMemoryBound(to: Bytef.self)
            stream.avail_out = uInt(o.count)
            let r = deflate(&stream, Z_FINISH)
            precondition(r == Z_STREAM_END, "deflate into a deflateBound buffer must finish")
            return o.count - Int(stream.avail_out)
        }
        out.removeLast(out.count - produced)
        return out
    }

    /// Inflates `input` into `output`, which must be filled exactly (a shorter stream is an
    /// error unless `allowShort`; trailing bytes after the stream's end are ignored, as qcow2
    /// pads compressed clusters to sectors). Returns the bytes written.
    @discardableResult
    public static func decompress(_ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer,
                                  framing: Framing, format: String, structure: String, at offset: UInt64,
                                  allowShort: Bool = false) throws -> Int {
        var stream = z_stream()
        let bits: Int32 = framing == .zlib ? 15 : -15
        guard inflateInit2_(&stream, bits, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
            throw FormatError(format, structure, at: offset, "zlib inflateInit failed")
        }
        defer { inflateEnd(&stream) }
        stream.next_in = UnsafeMutablePointer(mutating: input.baseAddress?.assumingMemoryBound(to: Bytef.self))
        stream.avail_in = uInt(input.count)
        stream.next_out = output.baseAddress?.assumingMemoryBound(to: Bytef.self)
        stream.avail_out = uInt(output.count)
        let r = inflate(&stream, Z_FINISH)
        let written = output.count - Int(stream.avail_out)
        switch r {
        case Z_STREAM_END:
            guard written == output.count || allowShort else {
                throw FormatError(format, structure, at: offset, "compressed data inflates to \(written) bytes, expected \(output.count)")
            }
            return written
        case Z_BUF_ERROR where stream.avail_out == 0:
            // The output is full but the stream has not ended: more data than the unit holds.
            throw FormatError(format, structure, at: offset, "compressed data inflates to more than \(output.count) bytes")
        case Z_BUF_ERROR:
            throw FormatError(format, structure, at: offset, "compressed data is truncated (\(written) of \(output.count) bytes)")
        default:
            let msg = stream.msg.map { String(cString: $0) } ?? "error \(r)"
            throw FormatError(format, structure, at: offset, "compressed data is damaged: \(msg)")
        }
    }
}
