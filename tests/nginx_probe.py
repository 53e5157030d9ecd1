"""Run inside a private network namespace by test_nginx_behaviour: serves a stand-in gateway on
127.0.0.1:3000, starts nginx with the rendered config, sends bounded requests to loopback only and
prints what it saw as JSON. Not a test module itself."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import subprocess
import sys
import threading
import time
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.0/1.1 are deprecated: that is the point
CERT, KEY = "/etc/nginx/ssl/cert.pem", "/etc/nginx/ssl/key.pem"
DOMAIN = "api.example.com"  # production's: /etc/hosts maps it to 127.0.0.1 here


DOWN = threading.Event()  # set: the gateway drops every request, as a crashed one would
# set: blue drops a request as an old container stopping under it does, and green goes live meanwhile (the
# colour switched between nginx picking blue and its connection reaching blue)
SWITCHED_UNDER_IT = threading.Event()
FLAG = Path("/etc/nginx/mfe/live/green")


class Gateway(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.do_GET()

    def do_GET(self) -> None:
        if SWITCHED_UNDER_IT.is_set() and not isinstance(self, Green):
            FLAG.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            FLAG.touch()
            self.close_connection = True
            return
        if DOWN.is_set():
            self.close_connection = True
            return
        body = json.dumps({"path": self.path, "request_id": self.headers.get("X-Request-ID")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class Green(Gateway):
    """The other colour's gateway: the same answers, and a header that says which one answered."""

    def end_headers(self) -> None:
        self.send_header("X-Colour", "green")
        super().end_headers()


def dns(hosts: dict[str, str]) -> None:
    """Docker's embedded DNS as nginx's resolver sees it (127.0.0.11:53): an A record for each name in
    /etc/hosts, NXDOMAIN for any other. A query carries one question; the answer points back to it."""
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.11", 53))

    def serve() -> None:
        while True:
            query, peer = server.recvfrom(512)
            labels, at = [], 12
            while query[at]:
                labels.append(query[at + 1 : at + 1 + query[at]].decode())
                at += 1 + query[at]
            question = query[12 : at + 5]
            qtype = int.from_bytes(query[at + 1 : at + 3], "big")
            address = hosts.get(".".join(labels).lower())
            if address is None or qtype != 1:
                flags, answers = (0x8183 if address is None else 0x8180), b""
            else:
                flags = 0x8180
                answers = b"\xc0\x0c\x00\x01\x00\x01" + (1).to_bytes(4, "big") + b"\x00\x04" + socket.inet_aton(address)
            header = query[:2] + flags.to_bytes(2, "big") + b"\x00\x01" + (1 if answers else 0).to_bytes(2, "big")
            server.sendto(header + b"\x00\x00\x00\x00" + question + answers, peer)

    threading.Thread(target=serve, daemon=True).start()


def client(max_version: ssl.TLSVersion | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if max_version is not None:
        ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.maximum_version = max_version
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    return ctx


def get(
    path: str,
    *,
    tls: bool = True,
    headers: dict[str, str] | None = None,
    name: str = DOMAIN,
    method: str = "GET",
    body: bytes | None = None,
) -> dict[str, object]:
    """A request to `name` (TLS: also the name in the handshake); what came back, or how it was refused."""
    conn: http.client.HTTPConnection
    if tls:
        conn = http.client.HTTPSConnection(name, 443, context=client(), timeout=5)
    else:
        conn = http.client.HTTPConnection(name, 80, timeout=5)
    try:
        conn.request(method, path, body=body, headers={"Host": DOMAIN, **(headers or {})})
        resp = conn.getresponse()
    except (OSError, http.client.HTTPException) as exc:
        conn.close()
        return {"refused": type(exc).__name__}
    body = resp.read().decode(errors="replace")
    conn.close()
    return {"status": resp.status, "headers": {k.lower(): v for k, v in resp.getheaders()}, "body": body}


def get_over_ipv6(path: str) -> dict[str, object]:
    """GET over IPv6 loopback, our name in the handshake and the Host: the status line's code."""
    try:
        with (
            socket.create_connection(("::1", 443), timeout=5) as raw,
            client().wrap_socket(raw, server_hostname=DOMAIN) as s,
        ):
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: {DOMAIN}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        return {"status": int(data.split(b" ", 2)[1])}
    except (OSError, ValueError, IndexError) as exc:
        return {"refused": type(exc).__name__}


def handshake(port: int, max_version: ssl.TLSVersion) -> str:
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            client(max_version).wrap_socket(raw, server_hostname=DOMAIN) as s,
        ):
            return str(s.version())
    except (ssl.SSLError, OSError) as exc:
        return f"refused: {type(exc).__name__}"


GROUPS = ("X25519", "prime256v1", "secp384r1", "X448", "secp521r1")


def key_exchange(port: int, group: str) -> str:
    """Whether a client offering only `group` completes a handshake (openssl: Python cannot pick groups)."""
    argv = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", DOMAIN, "-groups", group, "-brief"]
    try:
        done = subprocess.run(argv, input="", capture_output=True, text=True, timeout=10, check=False)
    except subprocess.TimeoutExpired:
        return "timeout"
    return "accepted" if done.returncode == 0 and "Protocol version" in done.stderr else "refused"


def control_server() -> int:
    """A server that does accept TLS 1.1, to show the client can speak it (so a refusal means nginx)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    ctx.load_cert_chain(CERT, KEY)
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        for _ in range(2):
            conn, _ = listener.accept()
            try:
                with ctx.wrap_socket(conn, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                pass

    threading.Thread(target=serve, daemon=True).start()
    return int(listener.getsockname()[1])


def main() -> None:
    nginx = sys.argv[1]
    lines = Path("/etc/hosts").read_text().splitlines()
    hosts = {name.lower(): line.split()[0] for line in lines for name in line.split()[1:]}
    dns(hosts)
    upstream = ThreadingHTTPServer((hosts["api-gateway-blue"], 3000), Gateway)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    green = ThreadingHTTPServer((hosts["api-gateway-green"], 3000), Green)
    threading.Thread(target=green.serve_forever, daemon=True).start()
    log = open(sys.argv[2], "w")  # noqa: SIM115 - closed when nginx stops
    proc = subprocess.Popen([nginx, "-g", "daemon off;"], stdout=log, stderr=log)
    try:
        for _ in range(100):  # bounded: at most 10 s
            try:
                socket.create_connection(("127.0.0.1", 443), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        out: dict[str, object] = {
            "redirect": get("/api/auth/login?x=1", tls=False),
            "redirect_other_host": get("/x", tls=False, headers={"Host": "evil.example"}),
            # Another name, or none: the handshake refused (TLS) or the connection closed (80).
            "other_name_tls": get("/health", name="127.0.0.1"),
            "other_name_http": get("/health", tls=False, name="127.0.0.1", headers={"Host": "127.0.0.1"}),
            "other_host_over_tls": get("/health", headers={"Host": "evil.example"}),
            "ipv6": get_over_ipv6("/health"),
            "health": get("/health"),
            "request_id_given": get("/api/ping", headers={"X-Request-ID": "abc-123"}),
            "request_id_made": get("/api/ping"),
            "not_found": get("/nope"),
        }
        # The colour switch: a file appears, and the next request goes to green, with no reload.
        out["blue"] = get("/api/ping")
        FLAG.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        FLAG.touch()
        out["green"] = get("/api/ping")
        FLAG.unlink()
        out["blue_again"] = get("/api/ping")
        # The switch under a request: blue drops it and green is live by then.
        SWITCHED_UNDER_IT.set()
        out["switched_get"] = get("/api/ping")
        FLAG.unlink()
        out["switched_post"] = get("/api/pay", method="POST", body=b"{}")
        FLAG.unlink()
        keyed = {"Idempotency-Key": "k-1", "Content-Type": "application/json"}
        out["switched_keyed_post"] = get("/api/pay", method="POST", body=b'{"a": 1}', headers=keyed)
        FLAG.unlink()
        SWITCHED_UNDER_IT.clear()
        DOWN.set()
        out["upstream_down"] = get("/health")
        DOWN.clear()
        started = time.monotonic()
        statuses = [int(str(get("/api/ping")["status"])) for _ in range(40)]
        out["burst_seconds"] = time.monotonic() - started
        out["burst_statuses"] = statuses
        out["limited"] = get("/api/ping")
        out["health_while_limited"] = get("/health")
        control = control_server()
        out["tls"] = {
            "nginx_1.0": handshake(443, ssl.TLSVersion.TLSv1),
            "nginx_1.1": handshake(443, ssl.TLSVersion.TLSv1_1),
            "nginx_1.2": handshake(443, ssl.TLSVersion.TLSv1_2),
            "nginx_1.3": handshake(443, ssl.TLSVersion.TLSv1_3),
            "control_1.1": handshake(control, ssl.TLSVersion.TLSv1_1),
        }
        out["groups"] = {group: key_exchange(443, group) for group in GROUPS}
        upstream.shutdown()
        green.shutdown()
        print(json.dumps(out))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


if __name__ == "__main__":
    main()
