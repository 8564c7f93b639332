"""A fake Asterisk manager (AMI) for fast tests: the greeting, a login, and answers
to the actions a seat's transfer sends. The real manager is exercised in tests/lab."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

Action = dict[str, str]


class FakeManager:
    """Listens on 127.0.0.1; ``answer(action)`` gives the reply's fields (None: no
    reply at all), ``after(action)`` the events to send once replied."""

    def __init__(
        self,
        *,
        secret: str = "s3cret",
        bridgepeer: str = "PJSIP/desk-00000002",
        originate: Action | None = None,
        originate_delay: float = 0.05,
        silent_on: str = "",
        getvar_delay: float = 0.0,
    ) -> None:
        self.secret = secret
        self.bridgepeer = bridgepeer
        self.originate = originate if originate is not None else {"Response": "Success"}
        self.originate_delay = originate_delay
        self.silent_on = silent_on
        self.getvar_delay = getvar_delay  # a loaded switch, slow to answer
        self.actions: list[Action] = []
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(8)
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def close(self) -> None:
        self._stop.set()
        self._sock.close()

    def names(self) -> list[str]:
        return [a.get("Action", "") for a in self.actions]

    # -- the wire ----------------------------------------------------------------------
    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn: socket.socket) -> None:
        def send(fields: Action) -> None:
            block = "".join(f"{k}: {v}\r\n" for k, v in fields.items()) + "\r\n"
            with contextlib.suppress(OSError):  # the client may have left meanwhile
                conn.sendall(block.encode())

        conn.sendall(b"Asterisk Call Manager/9.0.0\r\n")
        buffer = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in buffer:
                    try:
                        chunk = conn.recv(4096)
                    except OSError:
                        return
                    if not chunk:
                        return
                    buffer += chunk
                block, buffer = buffer.split(b"\r\n\r\n", 1)
                action: Action = {}
                for line in block.decode().split("\r\n"):
                    key, _, value = line.partition(": ")
                    action[key] = value
                self.actions.append(action)
                name, action_id = action.get("Action", ""), action.get("ActionID", "")
                if name == self.silent_on:
                    continue
                reply = self._answer(name, action)
                send({"Response": reply.pop("Response"), "ActionID": action_id, **reply})
                if name == "Originate":
                    time.sleep(self.originate_delay)
                    send({"Event": "OriginateResponse", "ActionID": action_id, **self.originate})
                if name == "Logoff":
                    return

    def _answer(self, name: str, action: Action) -> Action:
        if name == "Login":
            if action.get("Secret") == self.secret:
                return {"Response": "Success", "Message": "Authentication accepted"}
            return {"Response": "Error", "Message": "Authentication failed"}
        if name == "Getvar":
            time.sleep(self.getvar_delay)
            value = self.bridgepeer if action.get("Variable") == "BRIDGEPEER" else ""
            return {"Response": "Success", "Variable": action.get("Variable", ""), "Value": value}
        if name == "Originate":
            return {"Response": "Success", "Message": "Originate successfully queued"}
        if name == "Logoff":
            return {"Response": "Goodbye", "Message": "Thanks for all the fish."}
        return {"Response": "Success", "Message": f"{name} done"}
