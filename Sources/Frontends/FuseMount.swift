import BlockCore
import CFuse3
import Exposure
#if canImport(Glibc)
import Glibc
#endif

/// The file-system position of the filter: a FUSE mount showing `backingDirectory` where the
/// names the provider claims are served from block sources and everything else passes through.
///
/// The provider is asked for every looked-up regular path (relative, e.g. "vm.vhdx"); it returns
/// nil for files that pass through. Its answers are cached per path until the backing file's
/// identity (inode, size, mtime) changes, so it may read a plugin header. Each exposed path is
/// opened at most once per mount (first `open(2)`), and every handle shares that source — one
/// overlay per disk. Runs in the foreground until SIGINT/SIGTERM/SIGHUP or `fusermount3 -u`.
public final class FuseMount: @unchecked Sendable {
    // @unchecked: mutable state lives in `Locked` boxes.
    public struct Options: Sendable {
        public var foreground = true
        public var allowOther = false
        public var singleThreaded = false
        public var debug = false
        /// Read-only exposed files through the kernel page cache (FUSE keep_cache) instead of
        /// direct_io: re-reads at memory speed, first reads slower (docs/benchmarks-frontends.md).
        public var pageCache = false
        /// How reads whose bytes are a file's (`FileBackedSource`: an exposed raw file) reach the
        /// reader; `$BOOTLAB_FUSE_SPLICE` (own, libfuse, off) overrides the default for A/B
        /// benchmarks (docs/benchmarks-frontends.md).
        public var splice = SpliceMode.fromEnvironment()
        /// Some exposed file serves a file's bytes unchanged (an `--expose` of a raw image,
        /// read-only): requests are then sized so a spliced reply fits a pipe (1020 KiB when
        /// pipes stop at 1 MiB). Mounts of backups keep whole 1 MiB requests (their blocks).
        public var fileBackedExposures = false
        /// Read-only opens of a read-only exposed file whose bytes are one file's bytes at the same
        /// offsets (an `--expose` of a raw image) go into FUSE passthrough when the kernel grants
        /// it (Linux >= 6.9, CAP_SYS_ADMIN): the kernel reads that file itself, and this process
        /// sees no reads and the source never opens. Negotiated only with `fileBackedExposures`;
        /// taken for files that name one (`ExposedFile.kernelReadable`). `$BOOTLAB_FUSE_PASSTHROUGH=off`
        /// turns it off for A/B benchmarks (docs/benchmarks-frontends.md).
        public var passthrough = getenv("BOOTLAB_FUSE_PASSTHROUGH").map { String(cString: $0) != "off" } ?? true
        /// Names shown at the root although no backing file has them (each must be claimed by the provider).
        public var extraNames: [String] = []
        public init() {}
    }

    /// See `Options.splice`.
    public enum SpliceMode: String, Sendable, CaseIterable {
        /// The shim answers reads itself and splices file-backed pieces through a pipe sized for
        /// a whole 1 MiB reply: the bytes are copied once, by the kernel, into the reader's pages.
        case own
        /// libfuse's read_buf with FUSE_CAP_SPLICE_WRITE (its pipe is fs.pipe-max-size: 1 MiB
        /// replies fall back to a copy).
        case libfuse
        /// Every read copies the bytes through this process (pread, then the reply).
        case off

        public static func fromEnvironment() -> SpliceMode {
            guard let v = getenv("BOOTLAB_FUSE_SPLICE") else { return .own }
            return SpliceMode(rawValue: String(cString: v)) ?? .own
        }

        var cValue: Int32 {
            switch self {
            case .own: return Int32(BL_SPLICE_OWN)
            case .libfuse: return Int32(BL_SPLICE_LIBFUSE)
            case .off: return Int32(BL_SPLICE_OFF)
            }
        }
    }

    public let mountpoint: String
    public let backingDirectory: String
    public let options: Options
    private let provider: @Sendable (String) throws -> ExposedFile?

    private struct CacheEntry { var identity: [Int]; var file: ExposedFile? }
    private struct Handle { var path: String; var file: ExposedFile; var writable: Bool }

    private let cache = Locked([String: CacheEntry]())
    private let opened = Locked([String: any BlockSource]())
    private let openLock = NSLockish()
    private let handles = Locked([UInt64: Handle]())
    private let nextHandle = Locked<UInt64>(1)
    private let passthroughCount = Locked<UInt64>(0)
    /// Descriptors handed to the kernel for passthrough, by exposed name; open until `run` returns.
    private let passthroughFiles = Locked([String: Int32]())

    /// Opens the kernel took into passthrough (their reads never reach this process).
    public var passthroughOpens: UInt64 { passthroughCount.current }

    public init(mountpoint: String, backingDirectory: String, options: Options = Options(),
                provider: @escaping @Sendable (String) throws -> ExposedFile?) {
        // libfuse changes directory to / when it starts: keep every path absolute.
        self.mountpoint = absolutePath(mountpoint)
        self.backingDirectory = absolutePath(backingDirectory)
        self.options = options
        self.provider = provider
    }

    /// Mounts and serves until unmounted. Throws if the mount could not be made.
    public func run() throws {
        for dir in [backingDirectory, mountpoint] {
            var st = stat()
            guard stat(dir, &st) == 0 else { throw IOError("stat", path: dir, errno: errno) }
            guard (st.st_mode & S_IFMT) == S_IFDIR else { throw IOError("mount", path: dir, errno: ENOTDIR) }
        }
        var cb = bl_fuse_callbacks()
        cb.ctx = Unmanaged.passUnretained(self).toOpaque()
        cb.lookup = { ctx, path, size, writable in
            FuseMount.from(ctx).cLookup(String(cString: path!), size!, writable!)
        }
        cb.open = { ctx, path, wantWrite, handle in
            FuseMount.from(ctx).cOpen(String(cString: path!), wantWrite != 0, handle!)
        }
        cb.read = { ctx, h, buf, size, off in
            FuseMount.from(ctx).cRead(h, UnsafeMutableRawBufferPointer(start: buf, count: size), off)
        }
        cb.read_segments = { ctx, h, buf, size, off, segs, nsegs in
            FuseMount.from(ctx).cReadSegments(h, UnsafeMutableRawBufferPointer(start: buf, count: size), off, segs!, nsegs!)
        }
        cb.write = { ctx, h, buf, size, off in
            FuseMount.from(ctx).cWrite(h, UnsafeRawBufferPointer(start: buf, count: size), off)
        }
        cb.truncate = { ctx, path, size in
            FuseMount.from(ctx).cTruncate(String(cString: path!), size)
        }
        cb.passthrough_fd = { ctx, h in FuseMount.from(ctx).cPassthroughFD(h) }
        cb.passthrough_opened = { ctx, h in FuseMount.from(ctx).passthroughOpened(h) }
        cb.flush = { ctx, h in FuseMount.from(ctx).cFlush(h) }
        cb.release = { ctx, h in FuseMount.from(ctx).cRelease(h) }
        cb.list_extra = { ctx, fill, add in
            for name in FuseMount.from(ctx).options.extraNames {
                if name.withCString({ add!(fill, $0) }) != 0 { break }
            }
        }
        var opts = bl_fuse_options(foreground: options.foreground ? 1 : 0, allow_other: options.allowOther ? 1 : 0,
                                   single_thread: options.singleThreaded ? 1 : 0, debug: options.debug ? 1 : 0,
                                   page_cache: options.pageCache ? 1 : 0, splice: options.splice.cValue,
                                   file_backed: options.fileBackedExposures ? 1 : 0,
                                   passthrough: options.passthrough && options.fileBackedExposures ? 1 : 0)
        let status = withExtendedLifetime(self) { bl_fuse_run(mountpoint, backingDirectory, &cb, &opts) }
        passthroughFiles.withLock { files in
            for fd in files.values { close(fd) }
            files.removeAll()
        }
        // Flush every overlay on the way out: an unmount is a natural sync point.
        for source in opened.current.values { try? (source as? any WritableBlockSource)?.flush() }
        switch status {
        case 0: return
        case 2: throw FrontendError.mountRefused(mountpoint: mountpoint)
        default: throw FrontendError.fuseFailed(mountpoint: mountpoint, status: status)
        }
    }

    private static func from(_ ctx: UnsafeMutableRawPointer?) -> FuseMount {
        Unmanaged<FuseMount>.fromOpaque(ctx!).takeUnretainedValue()
    }

    // MARK: lookups

    /// Identity of the backing file, so a replaced plugin file is asked about again.
    private func identity(of path: String) -> [Int] {
        var st = stat()
        guard lstat(backingDirectory + "/" + path, &st) == 0 else { return [-1] }
        if (st.st_mode & S_IFMT) != S_IFREG { return [-2, Int(st.st_mode & S_IFMT)] }
        return [Int(st.st_dev), Int(st.st_ino), Int(st.st_size), st.st_mtim.tv_sec, st.st_mtim.tv_nsec]
    }

    func exposed(_ path: String) throws -> ExposedFile? {
        let id = identity(of: path)
        if let hit = cache.withLock({ $0[path] }), hit.identity == id { return hit.file }
        // Directories, symlinks and devices always pass through.
        let file = (id.first == -2) ? nil : try provider(path)
        cache.withLock { $0[path] = CacheEntry(identity: id, file: file) }
        return file
    }

    private func cLookup(_ path: String, _ size: UnsafeMutablePointer<UInt64>, _ writable: UnsafeMutablePointer<Int32>) -> Int32 {
        do {
            guard let f = try exposed(path) else { return 0 }
            // Once open, the source's size is the truth (a writable file may have grown).
            size.pointee = opened.withLock({ $0[path] })?.size ?? f.size
            writable.pointee = f.writable ? 1 : 0
            return 1
        } catch {
            report("lookup \(path)", error)
            return -errnoCode(for: error)
        }
    }

    // MARK: I/O

    private func source(for path: String, _ file: ExposedFile) throws -> any BlockSource {
        if let s = opened.withLock({ $0[path] }) { return s }
        return try openLock.withLock {
            if let s = opened.withLock({ $0[path] }) { return s }
            let s = try file.open()
            guard s.size == file.size else { throw FrontendError.sizeChanged(name: path, announced: file.size, opened: s.size) }
            if file.writable, !(s is any WritableBlockSource) { throw FrontendError.notWritable(path) }
            if file.resizable, !(s is any ResizableBlockSource) { throw FrontendError.notWritable(path) }
            opened.withLock { $0[path] = s }
            return s
        }
    }

    private func cOpen(_ path: String, _ wantWrite: Bool, _ handle: UnsafeMutablePointer<UInt64>) -> Int32 {
        do {
            guard let file = try exposed(path) else { return -ENOENT }
            if wantWrite && !file.writable { return -EACCES }
            // The source opens at the first read or write, not here: `qemu-img info -f raw` and
            // other open-fstat-close visitors must not open the backup (deferred open).
            let h = nextHandle.withLock { v -> UInt64 in defer { v += 1 }; return v }
            handles.withLock { $0[h] = Handle(path: path, file: file, writable: wantWrite) }
            handle.pointee = h
            return 0
        } catch {
            report("open \(path)", error)
            return -errnoCode(for: error)
        }
    }

    /// The current size of an exposed file: its source's once opened, else the announced one.
    private func currentSize(_ path: String, _ file: ExposedFile) -> UInt64 {
        opened.withLock({ $0[path] })?.size ?? file.size
    }

    /// A read of up to `count` bytes at `offset` of handle `h`: `body` gets the source and the
    /// bytes it may answer (> 0); the reply is its result, 0 past the end, or -errno.
    private func answerRead(_ h: UInt64, count: Int, at offset: UInt64, _ body: (any BlockSource, Int) throws -> Int) -> Int {
        guard let entry = handles.withLock({ $0[h] }) else { return -Int(EBADF) }
        // Past the end reads nothing, without opening the source.
        guard offset < currentSize(entry.path, entry.file) else { return 0 }
        do {
            let s = try source(for: entry.path, entry.file)
            let size = s.size
            guard offset < size else { return 0 }
            return try body(s, Int(min(UInt64(count), size - offset)))
        } catch {
            report("read \(entry.path) at \(offset)", error)
            return -Int(errnoCode(for: error))
        }
    }

    private func cRead(_ h: UInt64, _ buf: UnsafeMutableRawBufferPointer, _ offset: UInt64) -> Int {
        answerRead(h, count: buf.count, at: offset) { s, n in
            try s.read(at: offset, into: UnsafeMutableRawBufferPointer(rebasing: buf[0..<n]))
            return n
        }
    }

    /// A read answered as pieces: when the source says its bytes are a file's (`FileBackedSource`:
    /// an exposed raw file, a view's payload over one), the file ranges are named (the shim
    /// splices them) and zero spans written into `buf`; otherwise one piece read into `buf`, as
    /// `cRead`. Every piece sits at its offset in the request.
    private func cReadSegments(_ h: UInt64, _ buf: UnsafeMutableRawBufferPointer, _ offset: UInt64,
                               _ segs: UnsafeMutablePointer<bl_fuse_segment>, _ nsegs: UnsafeMutablePointer<Int32>) -> Int {
        nsegs.pointee = 0
        return answerRead(h, count: buf.count, at: offset) { s, n in
            if let spans = (s as? any FileBackedSource)?.fileSpans(in: offset..<offset + UInt64(n)),
               spans.count <= Int(BL_FUSE_MAX_SEGMENTS) {
                var at = 0
                for (i, span) in spans.enumerated() {
                    let k = Int(span.length)
                    switch span {
                    case let .file(fd, fileOffset, _):
                        segs[i] = bl_fuse_segment(fd: fd, pos: fileOffset, len: k)
                    case .zeros:
                        UnsafeMutableRawBufferPointer(rebasing: buf[at..<at + k]).initializeMemory(as: UInt8.self, repeating: 0)
                        segs[i] = bl_fuse_segment(fd: -1, pos: UInt64(at), len: k)
                    }
                    at += k
                }
                guard at == n else { fatalError("fileSpans covered \(at) of \(n) bytes") }
                nsegs.pointee = Int32(spans.count)
                return n
            }
            try s.read(at: offset, into: UnsafeMutableRawBufferPointer(rebasing: buf[0..<n]))
            segs[0] = bl_fuse_segment(fd: -1, pos: 0, len: n)
            nsegs.pointee = 1
            return n
        }
    }

    /// The descriptor the kernel may read instead of asking us (FUSE passthrough), or -1: only for
    /// an exposure that names such a file (`ExposedFile.kernelReadable`: a read-only raw image),
    /// opened here once per name (the source itself never opens: deferred open holds), and only
    /// while that file is a regular file exactly as long as the exposure (a passthrough read past
    /// the end would see more).
    private func cPassthroughFD(_ h: UInt64) -> Int32 {
        guard options.passthrough, let entry = handles.withLock({ $0[h] }), !entry.writable, !entry.file.writable,
              let target = entry.file.kernelReadable else { return -1 }
        return passthroughFiles.withLock { files -> Int32 in
            if let fd = files[entry.path] { return fd }
            let fd = open(target.path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { return -1 }
            var st = stat()
            guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG, UInt64(st.st_size) == entry.file.size else {
                close(fd)
                return -1
            }
            files[entry.path] = fd
            return fd
        }
    }

    private func passthroughOpened(_ h: UInt64) {
        passthroughCount.withLock { $0 += 1 }
        handles.withLock({ $0[h] })?.file.kernelReadable?.counters?.recordPassthroughOpen()
    }

    private func cWrite(_ h: UInt64, _ buf: UnsafeRawBufferPointer, _ offset: UInt64) -> Int {
        guard let entry = handles.withLock({ $0[h] }) else { return -Int(EBADF) }
        guard entry.writable else { return -Int(EBADF) }
        do {
            let s = try source(for: entry.path, entry.file)
            if entry.file.resizable {
                // A file that may grow (a VHDX writer allocating blocks): the overlay extends it
                // when the write ends past the size, deciding under its own lock (no race with a
                // concurrent truncate).
                guard let r = s as? any ResizableBlockSource else { throw FrontendError.notWritable(entry.path) }
                try r.writeExtending(at: offset, from: buf)
                return buf.count
            }
            // A disk does not grow: writes past the end fail like on a block device.
            guard offset < s.size else { return -Int(ENOSPC) }
            let n = Int(min(UInt64(buf.count), s.size - offset))
            guard let w = s as? any WritableBlockSource else { throw FrontendError.notWritable(entry.path) }
            try w.write(at: offset, from: UnsafeRawBufferPointer(rebasing: buf[0..<n]))
            return n
        } catch {
            report("write \(entry.path) at \(offset)", error)
            return -Int(errnoCode(for: error))
        }
    }

    /// truncate(2)/ftruncate(2) to another size (the shim answers same-size truncates itself).
    private func cTruncate(_ path: String, _ newSize: UInt64) -> Int32 {
        do {
            guard let file = try exposed(path) else { return -ENOENT }
            guard file.writable else { return -EACCES }
            guard file.resizable else { return newSize == currentSize(path, file) ? 0 : -EPERM }
            guard let r = try source(for: path, file) as? any ResizableBlockSource else { throw FrontendError.notWritable(path) }
            try r.resize(to: newSize)
            return 0
        } catch {
            report("truncate \(path) to \(newSize)", error)
            return -errnoCode(for: error)
        }
    }

    private func cFlush(_ h: UInt64) -> Int32 {
        guard let entry = handles.withLock({ $0[h] }) else { return -EBADF }
        // Nothing to make durable unless this handle could write and the source was opened.
        guard entry.writable, let s = opened.withLock({ $0[entry.path] }), let w = s as? any WritableBlockSource else { return 0 }
        do { try w.flush(); return 0 } catch {
            report("flush \(entry.path)", error)
            return -errnoCode(for: error)
        }
    }

    private func cRelease(_ h: UInt64) {
        _ = handles.withLock { $0.removeValue(forKey: h) }
    }

    private func report(_ what: String, _ error: any Error) {
        writeStandardError("bootlab mount: \(what): \(error)\n")
    }
}

/// `path` made absolute against the current directory (no symlink resolution).
public func absolutePath(_ path: String) -> String {
    if path.hasPrefix("/") { return path }
    guard let p = getcwd(nil, 0) else { return path }
    defer { free(p) }
    let cwd = String(cString: p)
    return (cwd == "/" ? "" : cwd) + "/" + path
}
