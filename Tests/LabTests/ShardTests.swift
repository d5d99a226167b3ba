import Testing
@testable import Lab

struct ShardTests {
    @Test func shardsPartitionTheSuiteDeterministically() throws {
        let suite = try ScenarioParsingTests.suite()
        let cells = Cell.all(suite.scenarios)
        #expect(cells.count >= 12)
        for n in 1...5 {
            var union: [Cell] = []
            for k in 1...n {
                let shard = try Shard(index: k, count: n)
                let picked = shard.select(cells)
                // Same answer whatever order the cells arrive in.
                #expect(picked == shard.select(cells.reversed()))
                union += picked
            }
            #expect(union.count == cells.count, "shards of \(n) overlap or miss cells")
            #expect(Set(union) == Set(cells))
        }
        #expect(throws: LabError.self) { try Shard(parsing: "3/2") }
        #expect(throws: LabError.self) { try Shard(parsing: "x") }
        #expect(try Shard(parsing: "2/3") == Shard(index: 2, count: 3))
    }

    @Test func targetFilterRestrictsCells() throws {
        let suite = try ScenarioParsingTests.suite()
        let cells = Cell.all(suite.scenarios, targets: ["virtualbox-ahci"])
        #expect(Set(cells.map(\.id)) == ["foreign-drivers/virtualbox-ahci", "foreign-drivers-unreconfigured/virtualbox-ahci",
                                          "encrypted-reconfigured/virtualbox-ahci", "vault-chain-encrypted-reconfigured/virtualbox-ahci"])
    }
}
