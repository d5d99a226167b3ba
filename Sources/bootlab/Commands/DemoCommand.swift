import ArgumentParser
import BlockCore

/// Placeholder until the VHDX library lands: prints facts about the toolchain the demo uses.
struct DemoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "selftest", abstract: "Check the crypto shim against known answers.")

    func run() throws {
        let crc = CRC32C.checksum(Array("123456789".utf8))
        let sha = SHA256.hash(Array("abc".utf8)).hex
        print("crc32c(\"123456789\") = 0x\(String(crc, radix: 16))")
        print("sha256(\"abc\") = \(sha)")
        guard crc == 0xE306_9283, sha == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad" else {
            throw ExitCode(1)
        }
    }
}
