import BlockCore
import Foundation
import TestSupport
import Testing
@testable import DiskFormats

/// The `copy_file_range` fast path of `SparseImageWriter` must write exactly the bytes the
/// read/write path writes, and `fileSpans` must describe exactly the bytes `read` returns.
@Suite("Kernel copy fast path")
struct KernelCopyTests {
    static let MiB: UInt64 = 1 << 20

    /// The bytes `spans` stand for, read from their files.
    static func materialize(_ spans: [FileSpan]) throws -> [UInt8] {
        var out: [UInt8] = []
        for s in spans {
            switch s {
            case let .zeros(n):
                out += [UInt8](repeating: 0, count: Int(n))
            case let .file(fd, offset, n):
                var b = [UInt8](repeating: 0, count: Int(n))
                let got = b.withUnsafeMutableBytes { pread(fd, $0.baseAddress, Int(n), off_t(offset)) }
                #expect(got == Int(n))
                out += b
            }
        }
        return out
    }

    @Test func kernel_copy_output_equals_read_write_output() throws {
        #expect(KernelCopy.isAvailable, "copy_file_range not found in the C library: the fast path is untested")
        let dir = Scratch("kcopy")
        let src = dir.file("src.raw")
        // Not a multiple of 512: the VHDX view sees a PaddedSource, whose tail is a zero span.
        let size = 21 * Self.MiB + 3 * 512 + 77
        _ = try makeSourceFile(src, size: size, blockSize: Self.MiB, chunkRatio: 4096, pattern: .sparseRandom, seed: 9)
        try RawFile(path: src, writable: true).write(at: size - 5, [1, 2, 3, 4, 5])
        let raw = try RawFile(path: src)
        let padded = PaddedSource.roundedUp(raw, to: 512)
        let view = try VHDXView(source: padded, options: .init(blockSize: 1 << 20, seed: Array(0..<16)))
        var hashes: Set<[UInt8]> = []
        for (kernel, chunk, threads) in [(false, 8 << 20, 2), (true, 8 << 20, 2), (true, 1 << 20, 1), (true, 3 << 20 + 4096, 2)] {
            let out = dir.file("out-\(kernel)-\(chunk)-\(threads).vhdx")
            let stats = try SparseImageWriter.write(view, toPath: out, options: .init(chunkSize: chunk, threads: threads, deferredPrefix: 8,
                                                                                  sync: false, kernelCopy: kernel))
            let f = try RawFile(path: out)
            #expect(f.size == view.size)
            #expect(stats.writtenBytes == stats.dataBytes)
            hashes.insert(try SHA256.hash(f))
            #expect(try f.read(at: 0, count: 8) == Array("vhdxfile".utf8))
        }
        #expect(hashes.count == 1, "kernel copy and read/write wrote different files")
        #expect(hashes.first == (try SHA256.hash(view)))
        // An independent reader agrees: the copied payload is the disk (the padding reads as zeros).
        let check = try runTool(["qemu-img", "compare", "-f", "raw", "-F", "vhdx", src, dir.file("out-true-1048576-1.vhdx")])
        #expect(check.status == 0, "qemu-img compare: \(check.stdout) \(check.stderr)")
    }

    @Test func file_spans_describe_the_read_bytes() throws {
        let dir = Scratch("spans")
        let src = dir.file("src.raw")
        let size = 9 * Self.MiB + 512 + 3
        _ = try makeSourceFile(src, size: size, blockSize: Self.MiB, chunkRatio: 4096, pattern: .sparseRandom, seed: 3)
        try RawFile(path: src, writable: true).write(at: 0, [7])
        let raw = try RawFile(path: src)
        let padded = PaddedSource.roundedUp(raw, to: 4096)
        let view = try VHDXView(source: padded, options: .init(blockSize: 1 << 20, seed: Array(0..<16)))
        var rng = SynthRandom(seed: 11)
        // Structures are synthesized: never file spans.
        #expect(view.fileSpans(in: 0..<4096) == nil)
        #expect(view.fileSpans(in: view.payloadStart - 1..<view.payloadStart + 1) == nil)
        #expect(view.fileSpans(in: view.size - 1..<view.size + 1) == nil)
        #expect(raw.fileSpans(in: 0..<size + 1) == nil)
        for _ in 0..<200 {
            let lo = view.payloadStart + rng.next(below: view.size - view.payloadStart)
            let hi = lo + rng.next(below: min(3 * Self.MiB, view.size - lo) + 1)
            let spans = try #require(view.fileSpans(in: lo..<hi))
            #expect(spans.reduce(0) { $0 + $1.length } == hi - lo)
            #expect(try Self.materialize(spans) == view.read(at: lo, count: Int(hi - lo)), "at \(lo)..<\(hi)")
        }
        for _ in 0..<100 {
            let lo = rng.next(below: padded.size)
            let hi = lo + rng.next(below: padded.size - lo + 1)
            let spans = try #require((padded as? any FileBackedSource)?.fileSpans(in: lo..<hi))
            #expect(try Self.materialize(spans) == padded.read(at: lo, count: Int(hi - lo)))
        }
        // A view of a source that is not file-backed has no spans, and the writer still works.
        let mem = MemorySource(try raw.read(at: 0, count: 4 * Int(Self.MiB)))
        let memView = try VHDXView(source: mem, options: .init(blockSize: 1 << 20, seed: Array(0..<16)))
        #expect(memView.fileSpans(in: memView.payloadStart..<memView.size) == nil)
    }

    /// tmpfs → ext4 (or any pair the kernel cannot copy between) falls back to read and write.
    /// Needs a writable tmpfs at /dev/shm; without one Swift Testing reports the test as skipped
    /// (and ci/test fails on any skip when CI=true).
    static let shmUsable: Bool = {
        var isDirectory: ObjCBool = false
        return FileManager.default.fileExists(atPath: "/dev/shm", isDirectory: &isDirectory) && isDirectory.boolValue
            && access("/dev/shm", W_OK) == 0
    }()

    @Test(.enabled(if: shmUsable, "platform lacks a capability: no writable tmpfs at /dev/shm"))
    func falls_back_across_file_systems() throws {
        let shm = "/dev/shm"
        let dir = Scratch("xfs")
        let src = shm + "/bootlab-kcopy-\(getpid()).raw"
        defer { unlink(src) }
        _ = try makeSourceFile(src, size: 6 * Self.MiB, blockSize: Self.MiB, chunkRatio: 4096, pattern: .denseRandom, seed: 4)
        let view = try VHDXView(source: try RawFile(path: src), options: .init(blockSize: 1 << 20, seed: Array(0..<16)))
        try SparseImageWriter.write(view, toPath: dir.file("a.vhdx"), options: .init(chunkSize: 1 << 20, deferredPrefix: 8, sync: false))
        try SparseImageWriter.write(view, toPath: dir.file("b.vhdx"), options: .init(chunkSize: 1 << 20, deferredPrefix: 8, sync: false, kernelCopy: false))
        #expect(try SHA256.hash(RawFile(path: dir.file("a.vhdx"))) == SHA256.hash(RawFile(path: dir.file("b.vhdx"))))
        #expect(try SHA256.hash(RawFile(path: dir.file("a.vhdx"))) == SHA256.hash(view))
    }
}
