"""A tiny QMP client: raw JSON over QEMU's unix socket.

    with QMP("/path/qmp.sock") as q:          # greeting + qmp_capabilities
        q.execute("query-status")             # -> {'status': 'running', ...}
        q.execute("set_link", name="net0", up=False)
        q.events                              # asynchronous events seen so far

Command errors raise QMPError (with QEMU's class and description).
"""

import json
import socket
import time


class QMPError(RuntimeError):
    def __init__(self, command, error):
        self.command = command
        self.error = error
        super().__init__(f"{command}: {error.get('class')}: {error.get('desc')}")


class QMP:
    def __init__(self, path, timeout=30.0, connect_timeout=10.0):
        self.path = path
        self.events = []
        self._buf = b""
        deadline = time.monotonic() + connect_timeout
        while True:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                self._sock.connect(path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                self._sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self._sock.settimeout(timeout)
        # QEMU 7.2 can send an event ahead of the greeting on a monitor a
        # client used before (an event emitted between the accept and the
        # new session's reset still sees the old session's capabilities):
        # kept with the others, and the next message must be the greeting.
        msg = self._read()
        while "event" in msg:
            self.events.append(msg)
            msg = self._read()
        self.greeting = msg
        if "QMP" not in self.greeting:
            raise RuntimeError(f"not a QMP greeting: {self.greeting}")
        self.execute("qmp_capabilities")

    def _read(self):
        while b"\n" not in self._buf:
            chunk = self._sock.recv(65536)
            if not chunk:
                raise ConnectionError("QMP socket closed")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def execute(self, command, **arguments):
        msg = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        self._sock.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            resp = self._read()
            if "event" in resp:
                self.events.append(resp)
                continue
            if "error" in resp:
                raise QMPError(command, resp["error"])
            if "return" in resp:
                return resp["return"]

    def wait_event(self, name, match=lambda data: True, timeout=60.0):
        """The first event `name` (seen already or arriving within `timeout`
        seconds) whose data satisfies `match`; None when none came."""
        def hit(e):
            return e.get("event") == name and match(e.get("data") or {})
        for e in self.events:
            if hit(e):
                self.events.remove(e)
                return e
        deadline = time.monotonic() + timeout
        old = self._sock.gettimeout()
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._sock.settimeout(left)
                try:
                    msg = self._read()
                except socket.timeout:
                    return None
                if "event" not in msg:
                    continue
                if hit(msg):
                    return msg
                self.events.append(msg)
        finally:
            self._sock.settimeout(old)

    def close(self):
        try:
            self._sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
