extension BackupImageReader {
    /// The first block this image holds itself (locally or in the vault) that an older image of
    /// its chain also holds: where a cache keyed without the image would serve stale bytes. Used
    /// by the lab's `stale-block` fault (test-only); nil for a single image.
    public func firstBlockShadowingParent() -> Int? {
        guard let parent else { return nil }
        return (0..<blockCount).first { i in
            let k = kind(i)
            guard k == .local || k == .vault, let older = parent.locate(i) else { return false }
            return older.kind == .local || older.kind == .vault
        }
    }
}
