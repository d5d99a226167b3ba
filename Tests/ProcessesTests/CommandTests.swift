import Foundation
import Processes
import Testing

/// The runner's contract: argv only, environment additions, working directory, stdin bytes,
/// captured output, typed errors, timeouts, and no hang on a tool that leaves a daemon behind.
struct CommandTests {
    @Test func capturesBothStreamsAndTheStatus() throws {
        let r = try Command(["sh", "-c", "echo out; echo err >&2; exit 3"]).run(check: false)
        #expect(r.termination == .exited(3))
        #expect(r.stdoutText == "out\n")
        #expect(r.stderrText == "err\n")
        #expect(!r.timedOut)
    }

    @Test func argumentsAreNeverShellWords() throws {
        let r = try Command("printf", ["%s|", "a b", "$HOME", "*"]).run()
        #expect(r.stdoutText == "a b|$HOME|*|")
    }

    @Test func stdinBytesLargerThanAPipeRoundTrip() throws {
        // 3 MiB: far more than a pipe holds, in both directions at once.
        let data = (0..<(3 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ $0 >> 9) }
        let r = try Command(["cat"], input: .bytes(data)).run()
        #expect(r.stdout == data)
    }

    @Test func aChildThatClosesStdinEarlyIsNoCrash() throws {
        let r = try Command(["head", "-c", "4"], input: .bytes([UInt8](repeating: 65, count: 4 << 20))).run()
        #expect(r.stdoutText == "AAAA")
    }

    @Test func failureNamesToolStatusAndStderrTail() throws {
        let e = #expect(throws: ProcessError.self) {
            try Command(["sh", "-c", "for i in 1 2 3 4 5 6; do echo line$i >&2; done; exit 7"]).run()
        }
        #expect(e?.reason == .failed(.exited(7)))
        #expect(e?.stderrTail == "line3 | line4 | line5 | line6")
        #expect(e?.description.hasPrefix("sh -c") == true)
        #expect(e?.description.contains("failed (exit 7): line3") == true)
    }

    @Test func aMissingToolCannotStart() throws {
        let e = #expect(throws: ProcessError.self) { try Command(["bootlab-no-such-tool-\(getpid())"]).run() }
        #expect(e?.reason == .cannotStart(errno: ENOENT))
    }

    @Test func environmentAdditionsRemovalsAndReplacement() throws {
        setenv("BOOTLAB_PROCESSES_TEST_REMOVED", "x", 1)
        defer { unsetenv("BOOTLAB_PROCESSES_TEST_REMOVED") }
        let r = try Command(["sh", "-c", "echo \"$A|${BOOTLAB_PROCESSES_TEST_REMOVED-unset}|${HOME:+home}\""],
                            environment: ["A": "1"], removedEnvironment: ["BOOTLAB_PROCESSES_TEST_REMOVED"]).run()
        #expect(r.stdoutText == "1|unset|home\n")
        let only = try Command(["/usr/bin/env"], environment: ["ONLY": "this"], inheritsEnvironment: false).run()
        #expect(only.stdoutText == "ONLY=this\n")
    }

    @Test func workingDirectory() throws {
        let r = try Command(["pwd"], workingDirectory: "/usr/share").run()
        #expect(r.stdoutText == "/usr/share\n")
    }

    @Test func timeoutStopsWithSIGTERM() throws {
        let start = Date()
        let r = try Command(["sleep", "30"]).run(timeout: 0.3, check: false)
        #expect(r.timedOut)
        #expect(r.termination == .signaled(SIGTERM))
        #expect(Date().timeIntervalSince(start) < 10)
        let e = #expect(throws: ProcessError.self) { try Command(["sleep", "30"]).run(timeout: 0.2) }
        #expect(e?.reason == .timedOut(seconds: 0.2, .signaled(SIGTERM)))
    }

    /// An ignored SIGTERM survives exec, so `sleep` itself ignores it (and no orphan is left).
    @Test func timeoutEndsWithSIGKILLWhenTermIsIgnored() throws {
        let r = try Command(["sh", "-c", "trap '' TERM; exec sleep 30"]).run(timeout: 0.2, check: false)
        #expect(r.timedOut)
        #expect(r.termination == .signaled(SIGKILL))
    }

    /// What Foundation's Process got wrong with vhdimount: the tool exits, a daemon it forked keeps
    /// the output pipes open. `run` must return at the tool's exit with what the tool wrote.
    @Test func aDaemonHoldingThePipesDoesNotHoldUsUp() throws {
        let start = Date()
        let r = try Command(["sh", "-c", "echo started; sleep 20 & echo $!"]).run(timeout: 15)
        #expect(Date().timeIntervalSince(start) < 10)
        let lines = r.stdoutText.split(separator: "\n")
        #expect(lines.first == "started")
        if let pid = lines.last.flatMap({ Int32($0) }) { kill(pid, SIGKILL) }
    }

    @Test func spawnKeepsTheChildAndTerminatesIt() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("bootlab-processes-\(getpid())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let log = dir + "/log"
        var c = Command(["sh", "-c", "echo up; echo warn >&2; exec sleep 30"])
        c.stdout = .file(log, append: false)
        c.stderr = .stdout
        let child = try c.spawn()
        #expect(child.isRunning)
        #expect(child.wait(timeout: 0.1) == nil)
        #expect(child.terminate(grace: 5) == .signaled(SIGTERM))
        #expect(!child.isRunning)
        // Reaped once; asking again gives the same answer and signals nobody.
        #expect(child.wait() == .signaled(SIGTERM))
        child.signal(SIGKILL)
        #expect(try String(contentsOfFile: log, encoding: .utf8) == "up\nwarn\n")
    }

    @Test func spawnedChildExitStatus() throws {
        var c = Command(["sh", "-c", "exit 4"])
        c.stdout = .null
        c.stderr = .null
        #expect(try c.spawn().wait(timeout: 30) == .exited(4))
    }
}
