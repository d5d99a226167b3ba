import BlockCore
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// `copy_file_range(2)`: copies file bytes inside the kernel. Glibc declares it only under
/// _GNU_SOURCE, which Swift's Glibc module does not define, so it is looked up at run time.
enum KernelCopy {
    private typealias Function = @convention(c) (Int32, UnsafeMutablePointer<Int64>?, Int32, UnsafeMutablePointer<Int64>?, Int, UInt32) -> Int

    private static let function: Function? = {
        #if os(Linux)
        guard let handle = dlopen(nil, RTLD_NOW), let symbol = dlsym(handle, "copy_file_range") else { return nil }
        return unsafeBitCast(symbol, to: Function.self)
        #else
        return nil
        #endif
    }()

    static var isAvailable: Bool { function != nil }

    enum Outcome: Equatable {
        case copied
        /// The kernel or file system cannot copy between these files (nothing, or a prefix of
        /// `copiedBytes`, was copied): the caller falls back to read and write.
        case unsupported(copiedBytes: Int)
        /// The source ended early (a file that shrank): `copiedBytes` were copied.
        case shortSource(copiedBytes: Int)
    }

    /// Copies `length` bytes from `input` at `inputOffset` to `output` at `outputOffset`.
    static func copy(from input: Int32, at inputOffset: UInt64, to output: Int32, at outputOffset: UInt64,
                     length: Int, path: String) throws -> Outcome {
        guard let function else { return .unsupported(copiedBytes: 0) }
        var done = 0
        while done < length {
            var inOff = Int64(inputOffset) + Int64(done), outOff = Int64(outputOffset) + Int64(done)
            let n = function(input, &inOff, output, &outOff, length - done, 0)
            if n < 0 {
                switch errno {
                case EINTR: continue
                case EXDEV, ENOSYS, EINVAL, EOPNOTSUPP, EBADF, ETXTBSY, EPERM: return .unsupported(copiedBytes: done)
                default: throw IOError("copy_file_range", path: path, errno: errno)
                }
            }
            if n == 0 { return .shortSource(copiedBytes: done) }
            done += n
        }
        return .copied
    }
}
