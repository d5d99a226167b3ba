import BlockCore
import Dispatch

/// A bounded LRU cache of decoded blocks, with single-flight loading: when several threads want
/// the same block, one decodes and the others wait for it.
final class BlockCache: @unchecked Sendable {
    // @unchecked: every field is guarded by `lock`.
    private struct Node {
        var key: Int
        var value: [UInt8]
        var prev: Int
        var next: Int
    }

    private let lock = NSLockish()
    let capacity: Int
    private var map: [Int: Int] = [:]
    private var nodes: [Node] = []
    private var freeSlots: [Int] = []
    private var head = -1  // most recent
    private var tail = -1  // least recent
    private var loading: [Int: DispatchGroup] = [:]

    init(capacity: Int) { self.capacity = max(1, capacity) }

    var count: Int { lock.withLock { map.count } }

    func contains(_ key: Int) -> Bool { lock.withLock { map[key] != nil || loading[key] != nil } }

    private func unlink(_ i: Int) {
        let n = nodes[i]
        if n.prev >= 0 { nodes[n.prev].next = n.next } else { head = n.next }
        if n.next >= 0 { nodes[n.next].prev = n.prev } else { tail = n.prev }
    }

    private func pushFront(_ i: Int) {
        nodes[i].prev = -1
        nodes[i].next = head
        if head >= 0 { nodes[head].prev = i }
        head = i
        if tail < 0 { tail = i }
    }

    private func lookup(_ key: Int) -> [UInt8]? {
        guard let i = map[key] else { return nil }
        unlink(i)
        pushFront(i)
        return nodes[i].value
    }

    private func insert(_ key: Int, _ value: [UInt8]) {
        if let i = map[key] { nodes[i].value = value; unlink(i); pushFront(i); return }
        if map.count >= capacity, tail >= 0 {
            let t = tail
            unlink(t)
            map[nodes[t].key] = nil
            nodes[t].value = []
            freeSlots.append(t)
        }
        let node = Node(key: key, value: value, prev: -1, next: -1)
        let i: Int
        if let f = freeSlots.popLast() { nodes[f] = node; i = f } else { nodes.append(node); i = nodes.count - 1 }
        map[key] = i
        pushFront(i)
    }

    enum Peek { case value([UInt8]), loading, none }

    /// Whether `key` is cached (returned, and made most recent), being loaded, or neither.
    /// Nothing is loaded or waited for.
    func peek(_ key: Int) -> Peek {
        lock.withLock {
            if let v = lookup(key) { return .value(v) }
            return loading[key] != nil ? .loading : .none
        }
    }

    /// Claims the loading of `key` for the caller (read-ahead) when it is neither cached nor being
    /// loaded: from now on `get(key)` waits for the caller's `complete(key, with:)` instead of
    /// decoding the block a second time. False when there is nothing to claim.
    func reserve(_ key: Int) -> Bool {
        lock.withLock {
            if map[key] != nil || loading[key] != nil { return false }
            let g = DispatchGroup()
            g.enter()
            loading[key] = g
            return true
        }
    }

    /// Ends a `reserve`: inserts the value, or gives the claim up (nil: a waiting `get` then loads
    /// the block itself and meets the error, if any, on its own).
    func complete(_ key: Int, with value: [UInt8]?) {
        let g: DispatchGroup? = lock.withLock {
            if let value { insert(key, value) }
            defer { loading[key] = nil }
            return loading[key]
        }
        g?.leave()
    }

    /// The cached value, or the result of `load` (run once even under contention). `hit` tells
    /// whether the value came from the cache.
    func get(_ key: Int, load: () throws -> [UInt8]) throws -> (value: [UInt8], hit: Bool) {
        while true {
            enum Step { case value([UInt8]), wait(DispatchGroup), load(DispatchGroup) }
            let step: Step = lock.withLock {
                if let v = lookup(key) { return .value(v) }
                if let g = loading[key] { return .wait(g) }
                let g = DispatchGroup()
                g.enter()
                loading[key] = g
                return .load(g)
            }
            switch step {
            case let .value(v): return (v, true)
            case let .wait(g): g.wait()
            case let .load(g):
                defer { g.leave() }
                do {
                    let v = try load()
                    lock.withLock { insert(key, v); loading[key] = nil }
                    return (v, false)
                } catch {
                    lock.withLock { loading[key] = nil }
                    throw error
                }
            }
        }
    }
}
