"""A small SSE and WebSocket client over raw sockets, for the tests."""

import base64
import os
import socket
import time

from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Message, Ping, RejectConnection, Request, TextMessage


class SSE:
    def __init__(self, port, path, headers=None, timeout=10):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self.sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n".encode())
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            self.buffer += chunk
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        self.status_line, *lines = head.decode("latin-1").split("\r\n")
        self.headers = {k.lower(): v.strip() for k, _, v in (l.partition(":") for l in lines)}
        self.closed = False

    def next(self, timeout=10):
        """The next event as a dict (event/id/data, or comment), None when the stream closed."""
        deadline = time.monotonic() + timeout
        while b"\n\n" not in self.buffer:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = self.sock.recv(65536)
            if not chunk:
                self.closed = True
                return None
            self.buffer += chunk
        frame, _, self.buffer = self.buffer.partition(b"\n\n")
        event = {}
        for line in frame.decode("utf-8").split("\n"):
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "":
                event["comment"] = value
            elif name == "data":
                event["data"] = event["data"] + "\n" + value if "data" in event else value
            else:
                event[name] = value
        return event

    def next_message(self, timeout=10):
        """The next event that is not a comment."""
        while True:
            event = self.next(timeout)
            if event is None or "comment" not in event:
                return event

    def close(self):
        self.sock.close()


class WS:
    def __init__(self, port, path, origin=None, timeout=10, host=None, headers=None):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.ws = WSConnection(ConnectionType.CLIENT)
        extra = ([("Origin", origin)] if origin else []) + list((headers or {}).items())
        self.sock.sendall(self.ws.send(Request(host=host or f"127.0.0.1:{port}", target=path, extra_headers=extra)))
        self.accepted = None
        self.status = None
        self.pending = []
        while self.accepted is None:
            data = self.sock.recv(65536)
            if not data:
                self.accepted = False
                break
            self.ws.receive_data(data)
            for event in self.ws.events():
                if isinstance(event, AcceptConnection):
                    self.accepted = True
                elif isinstance(event, RejectConnection):
                    self.accepted, self.status = False, event.status_code
                else:
                    self.pending.append(event)

    def send(self, text):
        self.sock.sendall(self.ws.send(Message(data=text)))

    def receive(self, timeout=10):
        """The next text message, or a CloseConnection event."""
        deadline = time.monotonic() + timeout
        parts = []
        while True:
            while self.pending:
                event = self.pending.pop(0)
                if isinstance(event, TextMessage):
                    parts.append(event.data)
                    if event.message_finished:
                        return "".join(parts)
                elif isinstance(event, CloseConnection):
                    return event
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            data = self.sock.recv(65536)
            if not data:
                return None
            self.ws.receive_data(data)
            self.pending.extend(self.ws.events())

    def pump(self, seconds, answer_pings=True):
        """Read for ``seconds``, answering pings (as browsers do) unless told not to; the
        pings seen, or None as soon as the server closes the connection."""
        deadline = time.monotonic() + seconds
        pings = 0
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                break
            except ConnectionResetError:
                return None
            if not data:
                return None
            self.ws.receive_data(data)
            for event in self.ws.events():
                if isinstance(event, Ping):
                    pings += 1
                    if answer_pings:
                        self.sock.sendall(self.ws.send(event.response()))
                else:
                    self.pending.append(event)
        return pings

    def close(self):
        self.sock.close()


def random_key():
    return base64.b64encode(os.urandom(16)).decode()
