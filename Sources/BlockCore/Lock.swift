import Synchronization

/// A small mutex wrapper (pthread-free, from the standard library's Synchronization module).
public final class NSLockish: Sendable {
    private let m = Mutex<Void>(())
    public init() {}
    public func withLock<T>(_ body: () throws -> T) rethrows -> T {
        try m.withLock { _ in try body() }
    }
}

/// A value guarded by a mutex, shareable across threads.
public final class Locked<Value: Sendable>: @unchecked Sendable {
    // @unchecked: every access to `value` goes through the lock.
    private let lock = NSLockish()
    private var value: Value
    public init(_ value: Value) { self.value = value }
    public func withLock<T>(_ body: (inout Value) throws -> T) rethrows -> T {
        try lock.withLock { try body(&value) }
    }
    public var current: Value { withLock { $0 } }
}
