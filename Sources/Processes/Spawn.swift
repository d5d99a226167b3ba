import CProcessShim
#if canImport(Glibc)
import Glibc
#endif

extension Command {
    /// Starts the child and keeps it (servers, QEMU). Its output goes to files, /dev/null or
    /// ours: `.capture` is refused here, since nobody would drain the pipe and the child would
    /// block once it filled.
    public func spawn() throws -> ChildProcess {
        for o in [stdout, stderr] {
            if case .capture = o { preconditionFailure("spawn: send output to a file or /dev/null; only run captures") }
        }
        return try start().child
    }

    /// Runs the child to its end and returns what it wrote; `check` (the default) throws
    /// `ProcessError` unless it exited 0. After `timeout` seconds it gets SIGTERM, and SIGKILL
    /// `grace` seconds later; that is an error under `check`, otherwise `timedOut` in the result.
    ///
    /// Output is read as it comes (poll(2) on the pipes and the pidfd together), so a chatty tool
    /// never blocks on a full pipe. Reading stops when the child itself exits, even if a daemon it
    /// left behind still holds the pipes open (vhdimount).
    @discardableResult
    public func run(timeout: Double? = nil, grace: Double = 5, check: Bool = true) throws -> Completed {
        let started = try start()
        let child = started.child
        var stdinData: [UInt8] = []
        if case .bytes(let b) = input { stdinData = b }
        var inFD = started.stdinWrite, outFD = started.stdoutRead, errFD = started.stderrRead
        var out: [UInt8] = [], err: [UInt8] = []
        var written = 0
        var deadline = timeout.map { Clock.now + $0 }
        var timedOut = false, killed = false
        var termination: Termination?

        func closeFD(_ fd: inout Int32) {
            if fd >= 0 { close(fd); fd = -1 }
        }
        defer { closeFD(&inFD); closeFD(&outFD); closeFD(&errFD) }

        /// Reads what is there now; false at end of file (or an error: nothing more will come).
        func drain(_ fd: Int32, into buffer: inout [UInt8]) -> Bool {
            var chunk = [UInt8](repeating: 0, count: 65536)
            while true {
                let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                if n > 0 { buffer += chunk[0..<n]; continue }
                if n == 0 { return false }
                if errno == EINTR { continue }
                return errno == EAGAIN || errno == EWOULDBLOCK
            }
        }

        if inFD >= 0 && stdinData.isEmpty { closeFD(&inFD) }
        while termination == nil {
            var fds: [pollfd] = []
            if inFD >= 0 { fds.append(pollfd(fd: inFD, events: Int16(POLLOUT), revents: 0)) }
            if outFD >= 0 { fds.append(pollfd(fd: outFD, events: Int16(POLLIN), revents: 0)) }
            if errFD >= 0 { fds.append(pollfd(fd: errFD, events: Int16(POLLIN), revents: 0)) }
            fds.append(pollfd(fd: started.pidfd, events: Int16(POLLIN), revents: 0))
            let ms = deadline.map { Clock.milliseconds(until: $0) } ?? -1
            let r = poll(&fds, nfds_t(fds.count), ms)
            if r < 0 && errno != EINTR { break }
            if r == 0, deadline != nil {
                // Out of time: ask politely, then insist.
                if !timedOut {
                    timedOut = true
                    child.signal(SIGTERM)
                    deadline = Clock.now + grace
                } else if !killed {
                    killed = true
                    child.signal(SIGKILL)
                    deadline = nil
                }
                continue
            }
            for p in fds where p.revents != 0 {
                if p.fd == inFD {
                    if !writeSome(inFD, stdinData, &written) || written == stdinData.count { closeFD(&inFD) }
                } else if p.fd == outFD {
                    if !drain(outFD, into: &out) { closeFD(&outFD) }
                } else if p.fd == errFD {
                    if !drain(errFD, into: &err) { closeFD(&errFD) }
                } else {
                    termination = child.wait(timeout: 0)
                }
            }
        }
        // It has exited: everything it wrote is in the pipes now. Take that and stop, whoever
        // else may still hold the write ends.
        if outFD >= 0 { _ = drain(outFD, into: &out) }
        if errFD >= 0 { _ = drain(errFD, into: &err) }
        let result = Completed(argv: argv, termination: termination ?? child.wait()!, stdout: out, stderr: err,
                               timedOut: timedOut, timeout: timeout)
        return check ? try result.checked() : result
    }

    /// Writes the next piece of `data` to a non-blocking pipe. SIGPIPE is blocked around the write
    /// (and a pending one taken back) so a child that closed its stdin early costs an EPIPE, not
    /// our process. False when the child stopped reading.
    private func writeSome(_ fd: Int32, _ data: [UInt8], _ written: inout Int) -> Bool {
        var pipeSet = sigset_t(), old = sigset_t()
        sigemptyset(&pipeSet)
        sigaddset(&pipeSet, SIGPIPE)
        pthread_sigmask(SIG_BLOCK, &pipeSet, &old)
        defer {
            var pending = sigset_t()
            sigpending(&pending)
            if sigismember(&pending, SIGPIPE) == 1 {
                var zero = timespec()
                _ = sigtimedwait(&pipeSet, nil, &zero)
            }
            pthread_sigmask(SIG_SETMASK, &old, nil)
        }
        while written < data.count {
            let n = data.withUnsafeBytes { p in
                Glibc.write(fd, p.baseAddress! + written, min(data.count - written, 65536))
            }
            if n > 0 { written += n; continue }
            if n < 0 && errno == EINTR { continue }
            return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)
        }
        return true
    }

    /// The child and our ends of its pipes (-1 where there is none).
    struct Started {
        var child: ChildProcess
        var pidfd: Int32
        var stdinWrite: Int32
        var stdoutRead: Int32
        var stderrRead: Int32
    }

    func start() throws -> Started {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        var parentEnds: [Int32] = []
        var childEnds: [Int32] = []
        defer { for fd in childEnds { close(fd) } }
        func fail(_ e: Int32) -> ProcessError {
            for fd in parentEnds { close(fd) }
            return ProcessError(argv: argv, reason: .cannotStart(errno: e), stderrTail: "")
        }
        /// A close-on-exec pipe: only the dup2'ed copy reaches the child, and no other child
        /// started meanwhile inherits either end (which would delay our end of file).
        func makePipe() throws -> (read: Int32, write: Int32) {
            var fds: [Int32] = [-1, -1]
            guard bl_pipe_cloexec(&fds) == 0 else { throw fail(errno) }
            return (fds[0], fds[1])
        }

        var stdinWrite: Int32 = -1, stdoutRead: Int32 = -1, stderrRead: Int32 = -1
        switch input {
        case .null: posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        case .inherit: break
        case .bytes:
            let p = try makePipe()
            _ = fcntl(p.write, F_SETFL, fcntl(p.write, F_GETFL) | O_NONBLOCK)
            parentEnds.append(p.write); childEnds.append(p.read)
            stdinWrite = p.write
            posix_spawn_file_actions_adddup2(&actions, p.read, 0)
        }
        func route(_ o: Output, to fd: Int32) throws -> Int32 {
            switch o {
            case .inherit: return -1
            case .null: posix_spawn_file_actions_addopen(&actions, fd, "/dev/null", O_WRONLY, 0); return -1
            case let .file(path, append):
                posix_spawn_file_actions_addopen(&actions, fd, path, O_WRONLY | O_CREAT | (append ? O_APPEND : O_TRUNC), 0o644)
                return -1
            case .stdout:
                precondition(fd == 2, "only stderr can follow stdout")
                posix_spawn_file_actions_adddup2(&actions, 1, 2)
                return -1
            case .capture:
                let p = try makePipe()
                _ = fcntl(p.read, F_SETFL, fcntl(p.read, F_GETFL) | O_NONBLOCK)
                parentEnds.append(p.read); childEnds.append(p.write)
                posix_spawn_file_actions_adddup2(&actions, p.write, fd)
                return p.read
            }
        }
        stdoutRead = try route(stdout, to: 1)
        stderrRead = try route(stderr, to: 2)
        if let dir = workingDirectory { bl_spawn_file_actions_addchdir(&actions, dir) }

        // The child starts with default signal handling and nothing blocked, whatever this
        // process ignores or blocks (SIGPIPE in particular: `tool | head` must work in it).
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        var none = sigset_t(), defaults = sigset_t()
        sigemptyset(&none)
        sigemptyset(&defaults)
        for s in [SIGPIPE, SIGINT, SIGTERM, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2, SIGCHLD] { sigaddset(&defaults, s) }
        posix_spawnattr_setsigmask(&attr, &none)
        posix_spawnattr_setsigdefault(&attr, &defaults)
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        let cArgs = argv.map { strdup($0) } + [nil]
        let cEnv = environmentStrings().map { strdup($0) } + [nil]
        defer { for p in cArgs + cEnv { free(p) } }
        var pid: pid_t = 0
        let rc = argv[0].contains("/")
            ? posix_spawn(&pid, argv[0], &actions, &attr, cArgs, cEnv)
            : posix_spawnp(&pid, argv[0], &actions, &attr, cArgs, cEnv)
        guard rc == 0 else { throw fail(rc) }
        let pidfd = bl_pidfd_open(pid)
        guard pidfd >= 0 else {
            // Without a pidfd we could not wait without polling: undo the start.
            let e = errno
            kill(pid, SIGKILL)
            var status: Int32 = 0
            while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
            throw fail(e)
        }
        return Started(child: ChildProcess(pid: pid, pidfd: pidfd, argv: argv), pidfd: pidfd,
                       stdinWrite: stdinWrite, stdoutRead: stdoutRead, stderrRead: stderrRead)
    }

    /// "NAME=value" strings: ours (unless not inherited) minus the removed names, plus additions.
    func environmentStrings() -> [String] {
        var vars: [(String, String)] = []
        var index: [String: Int] = [:]
        func set(_ k: String, _ v: String) {
            if let i = index[k] { vars[i].1 = v } else { index[k] = vars.count; vars.append((k, v)) }
        }
        if inheritsEnvironment {
            var p = environ
            while let c = p.pointee {
                let s = String(cString: c)
                if let eq = s.firstIndex(of: "=") {
                    let k = String(s[..<eq])
                    if !removedEnvironment.contains(k) { set(k, String(s[s.index(after: eq)...])) }
                }
                p += 1
            }
        }
        for (k, v) in environment.sorted(by: { $0.key < $1.key }) { set(k, v) }
        return vars.map { "\($0.0)=\($0.1)" }
    }
}
