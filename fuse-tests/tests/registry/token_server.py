#!/usr/bin/python3
"""The token server of the registry tests (fuse-tests/tests/registry.rs): the
Bearer flow of the distribution registry's `auth: token:` mode, as
https://distribution.github.io/distribution/spec/auth/token/ describes it.

    GET /token?service=S&scope=repository:NAME:pull,push[&scope=...]
        Authorization: Basic base64(user:pass)
    -> 200 {"token": JWT, "access_token": JWT, "expires_in": N, "issued_at": ...}
    -> 401 with bad or missing credentials
    GET /stats -> {"issued": tokens issued so far, "refused": requests refused}

The JWT is ES256, signed with a P-256 key made at start; its header carries
the self-signed certificate of that key as `x5c`, and the same certificate is
written (PEM) to --cert, the registry's `rootcertbundle`: distribution
2.8's token.go verifies an x5c chain against those roots (a `kid` would have
to be libtrust's key fingerprint; x5c needs no such encoding).

Expiry: the registry accepts a token up to 60 s (token.go's `Leeway`) after
its `exp`. So that a token is really dead after `expires_in` seconds, `exp`
is issued as iat + expires_in - 60 when expires_in < 120 (a client renews
from `expires_in`, never from `exp`).

Knows nothing of unionfs. Needs python3-jwt and python3-cryptography (Debian).
Writes its port to --port-file once it listens; stops on SIGTERM.
"""

import argparse
import base64
import datetime
import json
import os
import secrets
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

LEEWAY = 60


def make_key_and_cert(cert_path):
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "unionfs-test-token-issuer")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=False, encipher_only=False, decipher_only=False),
            critical=True)
        .sign(key, hashes.SHA256())
    )
    tmp = cert_path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    os.rename(tmp, cert_path)
    der = cert.public_bytes(serialization.Encoding.DER)
    return key, base64.b64encode(der).decode()


def parse_scope(scope):
    """`repository:NAME:a,b` -> {"type", "name", "actions"}; NAME may hold ':' (a port)."""
    typ, rest = scope.split(":", 1)
    name, _, actions = rest.rpartition(":")
    return {"type": typ, "name": name, "actions": [a for a in actions.split(",") if a]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--cert", required=True, help="where to write the rootcertbundle (PEM)")
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--issuer", required=True)
    ap.add_argument("--service", required=True)
    ap.add_argument("--expires-in", type=int, default=60)
    ap.add_argument("--log", required=True)
    args = ap.parse_args()

    key, x5c = make_key_and_cert(args.cert)
    want = "Basic " + base64.b64encode(f"{args.user}:{args.password}".encode()).decode()
    lock = threading.Lock()
    stats = {"issued": 0, "refused": 0}
    log = open(args.log, "a", buffering=1)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *a):
            # The path only: a query never holds credentials, headers do.
            log.write("%s %s\n" % (time.strftime("%H:%M:%S"), fmt % a))

        def reply(self, code, body, extra=()):
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in extra:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            url = urlparse(self.path)
            if url.path == "/stats":
                with lock:
                    return self.reply(200, dict(stats))
            if url.path != "/token":
                return self.reply(404, {"errors": [{"code": "NOT_FOUND"}]})
            q = parse_qs(url.query)
            if self.headers.get("Authorization") != want:
                with lock:
                    stats["refused"] += 1
                return self.reply(401, {"errors": [{"code": "UNAUTHORIZED",
                                                    "message": "bad credentials"}]},
                                  [("WWW-Authenticate", 'Basic realm="token"')])
            if q.get("service", [args.service])[0] != args.service:
                return self.reply(400, {"errors": [{"code": "BAD_SERVICE"}]})
            access = [parse_scope(s) for sc in q.get("scope", []) for s in sc.split(" ") if s]
            now = int(time.time())
            life = args.expires_in
            exp = now + life - LEEWAY if life < 2 * LEEWAY else now + life
            claims = {"iss": args.issuer, "sub": args.user, "aud": args.service,
                      "exp": exp, "nbf": now - 1, "iat": now,
                      "jti": secrets.token_hex(16), "access": access}
            token = jwt.encode(claims, key, algorithm="ES256",
                               headers={"typ": "JWT", "x5c": [x5c]})
            with lock:
                stats["issued"] += 1
            issued_at = datetime.datetime.fromtimestamp(now, datetime.timezone.utc)
            self.reply(200, {"token": token, "access_token": token, "expires_in": life,
                             "issued_at": issued_at.strftime("%Y-%m-%dT%H:%M:%SZ")})

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(srv.server_address[1]))
    os.rename(tmp, args.port_file)
    srv.serve_forever()


if __name__ == "__main__":
    main()
