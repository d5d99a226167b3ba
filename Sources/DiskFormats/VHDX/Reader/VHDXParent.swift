import BlockCore
#if canImport(Glibc)
import Glibc
#endif

/// What a differencing VHDX needs from its parent: the bytes (the block-source side) and the
/// DataWriteGuid its `parent_linkage` must name [SPEC:880-900]. A VHDX file is one; so can be any
/// other source (e.g. a plugin file standing in for a VHDX skeleton) that knows its linkage GUID.
public protocol VHDXParentIdentity: Sendable {
    /// The parent's current DataWriteGuid.
    var vhdxDataWriteGuid: GUID { get }
    /// The parent's logical sector size when it has one (a child must match it); nil if unknown.
    var vhdxLogicalSectorSize: UInt32? { get }
}

extension VHDXParentIdentity {
    public var vhdxLogicalSectorSize: UInt32? { nil }
}

public typealias VHDXParent = any BlockSource & VHDXParentIdentity

/// Opens the parent found at a resolved, existing path.
public typealias VHDXParentOpener = (String) throws -> VHDXParent

/// Opens a parent at a resolved path if it is of a kind the caller knows (not a plain VHDX);
/// nil lets the plain VHDX opener take it.
public typealias VHDXParentResolver = @Sendable (String) throws -> VHDXParent?

/// Problems of a differencing chain: typed so callers can tell a missing parent from a loop.
public enum VHDXParentError: Error, CustomStringConvertible, Equatable, Sendable {
    /// No candidate path from the parent locator names an existing file.
    case missing(child: String, candidates: [String])
    /// The locator has no usable path key (relative_path, volume_path, absolute_win32_path).
    case noPath(child: String)
    /// The chain leads back to a file already in it.
    case loop(chain: [String])
    /// parent_linkage does not name the parent's current DataWriteGuid: the parent changed.
    case linkageMismatch(child: String, parent: String, linkage: String, parentDataWriteGuid: GUID)
    case sectorSizeMismatch(child: String, parent: String, childSize: UInt32, parentSize: UInt32)
    /// A differencing source was opened without a path or a parent.
    case noParentGiven

    public var description: String {
        switch self {
        case let .missing(child, candidates):
            return "VHDX: parent of \(child) not found (tried \(candidates.joined(separator: ", ")))"
        case let .noPath(child):
            return "VHDX: parent locator of \(child) has no relative_path, volume_path or absolute_win32_path"
        case let .loop(chain):
            return "VHDX: differencing chain loops: \(chain.joined(separator: " -> "))"
        case let .linkageMismatch(child, parent, linkage, guid):
            return "VHDX: parent_linkage \(linkage) of \(child) does not match DataWriteGuid \(guid.bracedLowercase) of \(parent): the parent was modified"
        case let .sectorSizeMismatch(child, parent, c, p):
            return "VHDX: logical sector size \(c) of \(child) differs from \(p) of its parent \(parent)"
        case .noParentGiven:
            return "VHDX: differencing disk opened from a source without a parent"
        }
    }
}

/// Turns parent locator entries into candidate paths on this system [SPEC:900-912].
public enum VHDXParentPaths {
    /// Candidates in the spec's order of preference: relative_path (against the child's
    /// directory), volume_path, absolute_win32_path. Windows separators become '/', drive letters
    /// and `\\?\Volume{…}` prefixes are dropped.
    public static func candidates(locator: VHDXParentLocator, childPath: String) -> [String] {
        var out: [String] = []
        let dir = childPath.contains("/") ? String(childPath[..<childPath.lastIndex(of: "/")!]) : "."
        if let rel = locator["relative_path"] {
            var r = rel.replacingBackslashes()
            while r.hasPrefix("./") { r.removeFirst(2) }
            out.append(r.hasPrefix("/") ? r : (dir.isEmpty ? "/" : dir) + "/" + r)
        }
        if let vol = locator["volume_path"] {
            var v = vol.replacingBackslashes()
            if v.hasPrefix("//?/"), let close = v.firstIndex(of: "}") { v = String(v[v.index(after: close)...]) }
            out.append(v.hasPrefix("/") ? v : "/" + v)
        }
        if let abs = locator["absolute_win32_path"] {
            var a = abs.replacingBackslashes()
            if a.hasPrefix("//?/") { a.removeFirst(4) }
            let c = Array(a)
            if c.count >= 2, c[1] == ":", c[0].isLetter { a = String(a.dropFirst(2)) }
            out.append(a.hasPrefix("/") ? a : "/" + a)
        }
        var seen = Set<String>()
        return out.filter { seen.insert($0).inserted }
    }

    /// The locator a child made on this system stores: `.\name` style relative_path from the
    /// child's directory and a drive-letter absolute_win32_path of the parent's real path.
    public static func locatorPaths(childPath: String, parentPath: String) throws -> (relative: String, absoluteWin32: String) {
        let parentReal = try realPath(parentPath)
        let childDir = try realPath(directory(of: childPath))
        let p = parentReal.split(separator: "/").map(String.init)
        let c = childDir.split(separator: "/").map(String.init)
        var common = 0
        while common < min(p.count - 1, c.count) && p[common] == c[common] { common += 1 }
        let ups = Array(repeating: "..", count: c.count - common)
        let rel = (ups.isEmpty ? ["."] : ups) + p[common...]
        return (rel.joined(separator: "\\"), "C:" + parentReal.replacingOccurrences("/", "\\"))
    }

    static func directory(of path: String) -> String {
        guard let i = path.lastIndex(of: "/") else { return "." }
        return i == path.startIndex ? "/" : String(path[..<i])
    }

    public static func realPath(_ path: String) throws -> String {
        guard let r = realpath(path, nil) else { throw IOError("resolve", path: path, errno: errno) }
        defer { free(r) }
        return String(cString: r)
    }

    static func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }
}

extension String {
    func replacingBackslashes() -> String { replacingOccurrences("\\", "/") }
    func replacingOccurrences(_ a: Character, _ b: Character) -> String { String(map { $0 == a ? b : $0 }) }
}
