import Foundation
import Processes

/// The lab's shorthand for `Processes.Command`: a tool found on PATH with arguments (no shell),
/// run in the C locale (tools' messages and number formats are parsed), its output as text. A
/// failure under `check` is a `LabError` quoting the command and the end of its stderr, so
/// `bootlab lab` reports it like its other errors.
public enum Shell {
    public struct Output: Sendable {
        public var status: Int32
        public var stdout: String
        public var stderr: String
    }

    @discardableResult
    public static func run(_ tool: String, _ arguments: [String], environment: [String: String] = [:],
                           currentDirectory: URL? = nil, input: String? = nil, check: Bool = true) throws -> Output {
        var command = Command([tool] + arguments, environment: ["LC_ALL": "C"].merging(environment) { _, new in new },
                              workingDirectory: currentDirectory?.path)
        if let input { command.input = .bytes(Array(input.utf8)) }
        do {
            let r = try command.run(check: check)
            return Output(status: r.termination.status, stdout: r.stdoutText, stderr: r.stderrText)
        } catch let e as ProcessError {
            // Unchecked callers read statuses, not errors: a tool that cannot start is the
            // shell's 127, as it was when this ran through /usr/bin/env.
            if !check, case .cannotStart = e.reason { return Output(status: 127, stdout: "", stderr: e.description) }
            throw LabError.process(e)
        }
    }
}
