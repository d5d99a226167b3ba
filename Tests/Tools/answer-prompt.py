#!/usr/bin/env python3
"""answer-prompt.py SECRET_FILE PROGRAM ARG...

Runs PROGRAM on a new pseudo-terminal (its controlling terminal, so /dev/tty is the pty) and
types the contents of SECRET_FILE (one trailing newline removed) followed by Enter once the
program prints "Passphrase:". The secret never appears on any command line. The program's
terminal output is copied to stdout; SIGTERM and SIGINT are passed on to the program; the exit
status is the program's (128+N when a signal N ended it).

Tests use it to drive BootLab's terminal prompt the way a user would.
"""
import os
import pty
import signal
import sys

PROMPT = b"Passphrase:"


def main() -> int:
    if len(sys.argv) < 3:
        sys.stderr.write(__doc__)
        return 2
    with open(sys.argv[1], "rb") as f:
        secret = f.read()
    if secret.endswith(b"\n"):
        secret = secret[:-1]
    argv = sys.argv[2:]
    pid, fd = pty.fork()
    if pid == 0:
        try:
            os.execv(argv[0], argv)
        finally:
            os._exit(127)

    def forward(signum, _frame):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    # A parent may have started us with these blocked; forwarding needs them delivered.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
    seen = b""
    answered = False
    while True:
        try:
            data = os.read(fd, 4096)
        except OSError:  # EIO: the program closed the terminal (it exited)
            break
        if not data:
            break
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        if not answered:
            seen += data
            if PROMPT in seen:
                os.write(fd, secret + b"\n")
                answered = True
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


if __name__ == "__main__":
    sys.exit(main())
