import BlockCore
import DiskFormats
#if canImport(Glibc)
import Glibc
#endif

/// `bootlab mount --writable --materialize --finalize`: the finalize of a plugin whose file is
/// served writable, done in the serving process, so a VM keeps running (and writing) across it
/// (docs/replacement-file.md, "Finalize under a writable mount").
///
/// The served file's source is a `SwitchingSource` over the write overlay. When the fill is
/// complete, `finalize()` holds the source's write gate — every write passes it, so no write
/// enters the overlay while it is held and none is acknowledged — through the whole finalize:
/// the overlay flushed, built into the replacement, the old plugin linked aside, the replacement
/// renamed over `P`, the directory synced, the companions moved; only then is the open file
/// pointed at the native file and the gate released. So no write is ever acknowledged into the
/// replacement while `P` is still the plugin: a crash before the rename finds every acknowledged
/// write in the overlay (and finalize builds it again), a crash after it finds them in the
/// native file. Reads go on during the finalize (from the overlay and the fill, whose bytes do
/// not change under them).
public final class WritableSwitchOver: @unchecked Sendable {
    // @unchecked: `served` and `finalized` are only touched under `lock`.
    public let materializer: Materializer
    /// The overlay the front-end serves the plugin with (applied from its files when finalize
    /// comes before the first open).
    public let overlayPath: String?
    private let lock = NSLockish()
    private var served: SwitchingSource?
    private var finalized: Replacement.FinalizeReport?

    public init(materializer: Materializer, overlayPath: String?) {
        self.materializer = materializer
        self.overlayPath = overlayPath
    }

    /// The source a front-end serves: `openStack()` (the layer stack, its write overlay on top)
    /// wrapped so finalize can switch it; after a finalize, the native file itself (`maxSize`: its
    /// growth limit, nil for a fixed size).
    public func open(maxSize: UInt64?, _ openStack: () throws -> any BlockSource) throws -> any BlockSource {
        try lock.withLock {
            if let served { return served }
            if finalized != nil {
                return try NativeFileSource(path: materializer.paths.plugin, minSize: materializer.plugin.size,
                                            maxSize: maxSize)
            }
            let top = try openStack()
            guard let overlay = top as? WriteOverlay else { return top }
            let s = SwitchingSource(overlay)
            served = s
            return s
        }
    }

    /// Finalizes (the fill must be complete) and switches the served file to the native file
    /// (see the type's comment). Idempotent: a second call returns the first report.
    @discardableResult
    public func finalize() throws -> Replacement.FinalizeReport {
        try lock.withLock {
            if let finalized { return finalized }
            let m = materializer
            guard let driver = DiskFormatRegistry.driver(named: m.plugin.formatName) else {
                throw ReplacementError.unsupportedFormat(m.plugin.formatName)
            }
            let report: Replacement.FinalizeReport
            if let served {
                var outcome: Result<Replacement.FinalizeReport, any Error>?
                try served.switchOver { overlay in
                    // Durable before anything is built from it (a power cut after the switch
                    // must not lose what the overlay acknowledged).
                    try overlay.flush()
                    // The replacement's inode, opened before it is renamed into place: once it
                    // is `P`, every write must go there, whatever fails after the rename.
                    let native = try NativeFileSource(path: m.paths.replacement, minSize: overlay.minSize, maxSize: overlay.maxSize)
                    outcome = Result { try Replacement.finalize(m, driver: driver, overlay: overlay, faults: m.options.faults) }
                    return native.isFile(at: m.paths.plugin) ? native : nil
                }
                report = try outcome!.get()
            } else {
                // Not opened yet: the overlay's files (if any) are what was acknowledged.
                let overlay = try overlayPath.flatMap { path -> WriteOverlay? in
                    guard access(path + ".map", F_OK) == 0 else { return nil }
                    return try WriteOverlay(base: m, path: path, maxSize: OverlayJournal.maxLimit, readOnly: true)
                }
                report = try Replacement.finalize(m, driver: driver, overlay: overlay, faults: m.options.faults)
            }
            finalized = report
            return report
        }
    }
}

/// The served file of a writable plugin under `WritableSwitchOver`: the write overlay until the
/// switch, then the native file. Every write, resize and flush passes `writeGate`; the switch
/// holds it, so a writer that waited for it writes to the source that is current when it gets it.
public final class SwitchingSource: ResizableBlockSource, @unchecked Sendable {
    // @unchecked: `target` is behind a lock; the overlay is thread-safe.
    public let overlay: WriteOverlay
    private let target: Locked<any ResizableBlockSource>
    private let writeGate = NSLockish()

    init(_ overlay: WriteOverlay) {
        self.overlay = overlay
        self.target = Locked(overlay)
    }

    /// True once writes go to the native file.
    public var switched: Bool { !(target.current is WriteOverlay) }

    public var size: UInt64 { target.current.size }
    public var minSize: UInt64 { overlay.minSize }
    public var maxSize: UInt64 { overlay.maxSize }

    // A read that began on the overlay before the switch completes there: those bytes are the
    // native file's too (the switch happens after everything was built), a write it races with
    // was not yet acknowledged.
    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        try target.current.read(at: offset, into: buffer)
    }

    public func extents(in range: Range<UInt64>) throws -> [Extent] { try target.current.extents(in: range) }

    public func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws {
        try writeGate.withLock { try target.current.write(at: offset, from: buffer) }
    }

    public func writeExtending(at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws {
        try writeGate.withLock { try target.current.writeExtending(at: offset, from: buffer) }
    }

    public func resize(to newSize: UInt64) throws {
        try writeGate.withLock { try target.current.resize(to: newSize) }
    }

    public func flush() throws {
        try writeGate.withLock { try target.current.flush() }
    }

    /// Holds the write gate while `body` builds the native file from the overlay, then makes
    /// what it returns the target (nil, or a throw: writes go on into the overlay).
    func switchOver(_ body: (WriteOverlay) throws -> (any ResizableBlockSource)?) throws {
        try writeGate.withLock {
            if let next = try body(overlay) { target.withLock { $0 = next } }
        }
    }
}

/// A finalized native file served writable: reads and writes go to the file; it may grow up to
/// `maxSize` (a VHDX writer allocating blocks), never shrink below `minSize`. A write is
/// acknowledged once in the file (the page cache: it survives kill -9, as the overlay's did);
/// `flush` makes it durable. The size is the file's own (`fstat`): once `P` is the native file, a
/// front-end may also change it through the path (FUSE truncates a path that passes through).
public final class NativeFileSource: ResizableBlockSource, @unchecked Sendable {
    // @unchecked: the descriptor is immutable, pread/pwrite are thread-safe; size changes by
    // this source go through `sizeLock`.
    public let file: RawFile
    public let minSize: UInt64
    public let maxSize: UInt64
    private let sizeLock = NSLockish()

    public init(path: String, minSize: UInt64, maxSize: UInt64?) throws {
        file = try RawFile(path: path, writable: true)
        var st = stat()
        guard fstat(file.fd, &st) == 0 else { throw IOError("stat", path: path, errno: errno) }
        let size = UInt64(st.st_size)
        self.minSize = min(minSize, size)
        self.maxSize = max(maxSize ?? size, size)
    }

    public var size: UInt64 {
        var st = stat()
        return fstat(file.fd, &st) == 0 ? UInt64(st.st_size) : 0
    }

    public func read(at offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws {
        try checkRange(offset, buffer.count)
        try file.preadFully(at: offset, into: buffer)
    }

    public func extents(in range: Range<UInt64>) throws -> [Extent] {
        let r = range.clamped(to: 0..<size)
        return r.isEmpty ? [] : [Extent(offset: r.lowerBound, length: UInt64(r.count), kind: .data)]
    }

    public func write(at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws {
        try checkRange(offset, buffer.count)
        try RawFile.writeFully(file.fd, buffer, at: offset, path: file.path)
    }

    public func writeExtending(at offset: UInt64, from buffer: UnsafeRawBufferPointer) throws {
        let (end, overflow) = offset.addingReportingOverflow(UInt64(buffer.count))
        guard !overflow, end <= maxSize else { throw ResizeError.beyondLimit(requested: overflow ? .max : end, limit: maxSize) }
        try sizeLock.withLock {
            if end > size { try resizeLocked(to: end) }
            try RawFile.writeFully(file.fd, buffer, at: offset, path: file.path)
        }
    }

    public func resize(to newSize: UInt64) throws {
        try sizeLock.withLock { try resizeLocked(to: newSize) }
    }

    private func resizeLocked(to newSize: UInt64) throws {
        guard newSize >= minSize else { throw ResizeError.belowMinimum(requested: newSize, minimum: minSize) }
        guard newSize <= maxSize else { throw ResizeError.beyondLimit(requested: newSize, limit: maxSize) }
        guard newSize != size else { return }
        guard ftruncate(file.fd, off_t(newSize)) == 0 else { throw IOError("truncate", path: file.path, errno: errno) }
        // Durable before it is acknowledged, as the overlay's size records are.
        try file.flush()
    }

    public func flush() throws { try file.flush() }

    /// Whether `path` names this file (the same inode).
    func isFile(at path: String) -> Bool {
        var a = stat(), b = stat()
        return fstat(file.fd, &a) == 0 && stat(path, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino
    }
}
