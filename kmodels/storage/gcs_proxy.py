"""A TLS-terminating HTTPS proxy that sends TensorFlow's `gs://` traffic to a GCS emulator.

Why it exists: TensorFlow's built-in `gs://` filesystem always calls Google's hosts over
HTTPS and has no endpoint setting, but its libcurl honours `HTTPS_PROXY` and trusts the CA
in `CURL_CA_BUNDLE`. This proxy accepts the CONNECT, presents a certificate for Google's
storage hosts signed by a CA made at start-up, and forwards each plain HTTP request to the
emulator (fake-gcs-server or any server of the GCS JSON API). `kmodels.storage` starts it
as a child process when `STORAGE_EMULATOR_HOST` is set; it is a development and test route,
never used against real Google Cloud Storage.

Three things the emulator needs adapted, all found against fake-gcs-server:
- a resumable upload's `Location` comes back as `http://...`; curl must get `https://` with
  the Google host to stay inside this proxy;
- Go's HTTP server answers `Transfer-Encoding: identity` with 501, so every request is
  forwarded with its body read whole and a `Content-Length`;
- TensorFlow 2.21 asks `GET /storage/v1/b/BUCKET/storageLayout` before renaming a
  directory (to use the folders API of hierarchical-namespace buckets) and fails the rename
  on the emulator's 404; for a bucket that exists the proxy answers what Google answers for
  a flat bucket.

Run as a script (no kmodels or TensorFlow import, so it starts in a fraction of a second):
  python kmodels/storage/gcs_proxy.py --upstream=http://127.0.0.1:4443 --certdir=DIR
It writes DIR/ca.pem, prints the port it listens on, and exits when its parent does.
"""

import argparse
import datetime
import http.client
import http.server
import json
import os
import re
import socketserver
import ssl
import sys
import threading
import time
import urllib.parse

# The hosts TensorFlow's GCS filesystem calls (JSON API, uploads, object reads).
GOOGLE_STORAGE_HOSTS = ("www.googleapis.com", "storage.googleapis.com")
_STORAGE_LAYOUT = re.compile(r"/storage/v1/b/([^/]+)/storageLayout")
_HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
    "content-length", "expect"
}


def write_certificates(certdir):
  """A throw-away CA (certdir/ca.pem) and a certificate for Google's storage hosts."""
  from cryptography import x509  # pylint: disable=g-import-not-at-top
  from cryptography.hazmat.primitives import hashes, serialization
  from cryptography.hazmat.primitives.asymmetric import ec
  from cryptography.x509.oid import NameOID

  now = datetime.datetime.now(datetime.timezone.utc)

  def certificate(subject, issuer, public_key, signing_key, extensions):
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(
        public_key).serial_number(
            x509.random_serial_number()).not_valid_before(now - datetime.timedelta(
                hours=1)).not_valid_after(now + datetime.timedelta(days=7)))
    for extension, critical in extensions:
      builder = builder.add_extension(extension, critical=critical)
    return builder.sign(signing_key, hashes.SHA256())

  ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(
      ec.SECP256R1())
  ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kmodels GCS emulator CA")])
  ca = certificate(ca_name, ca_name, ca_key.public_key(), ca_key,
                   [(x509.BasicConstraints(ca=True, path_length=0), True),
                    (x509.KeyUsage(digital_signature=True,
                                   key_cert_sign=True,
                                   crl_sign=True,
                                   content_commitment=False,
                                   key_encipherment=False,
                                   data_encipherment=False,
                                   key_agreement=False,
                                   encipher_only=False,
                                   decipher_only=False), True)])
  leaf_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, GOOGLE_STORAGE_HOSTS[0])])
  leaf = certificate(
      leaf_name, ca_name, leaf_key.public_key(), ca_key,
      [(x509.SubjectAlternativeName([x509.DNSName(h) for h in GOOGLE_STORAGE_HOSTS]), False),
       (x509.BasicConstraints(ca=False, path_length=None), True)])
  pem = serialization.Encoding.PEM
  paths = {name: os.path.join(certdir, name) for name in ("ca.pem", "host.pem", "host.key")}
  with open(paths["ca.pem"], "wb") as f:
    f.write(ca.public_bytes(pem))
  with open(paths["host.pem"], "wb") as f:
    f.write(leaf.public_bytes(pem) + ca.public_bytes(pem))
  with open(paths["host.key"], "wb") as f:
    f.write(
        leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption()))
  return paths


class _Handler(http.server.BaseHTTPRequestHandler):
  """CONNECT to a Google storage host, then HTTP requests inside the TLS tunnel."""
  protocol_version = "HTTP/1.1"  # keep-alive; answers `Expect: 100-continue` itself

  def log_message(self, format, *args):  # pylint: disable=redefined-builtin
    if self.server.verbose:
      sys.stderr.write("[gcs_proxy] " + format % args + "\n")

  def do_CONNECT(self):
    host = self.path.rpartition(":")[0]
    if host not in GOOGLE_STORAGE_HOSTS:
      self.send_error(403, f"this proxy only serves {', '.join(GOOGLE_STORAGE_HOSTS)}")
      return
    self.send_response(200, "Connection established")
    self.end_headers()
    self.connection = self.server.tls.wrap_socket(self.connection, server_side=True)
    self.rfile = self.connection.makefile("rb", self.rbufsize)
    self.wfile = socketserver._SocketWriter(self.connection)  # pylint: disable=protected-access
    self.close_connection = False

  def _read_body(self):
    if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
      chunks = []
      while True:
        size = int(self.rfile.readline().split(b";")[0], 16)
        if not size:
          while self.rfile.readline().strip():  # trailers
            pass
          return b"".join(chunks)
        chunks.append(self.rfile.read(size))
        self.rfile.readline()
    return self.rfile.read(int(self.headers.get("Content-Length") or 0))

  def _forward(self):
    body = self._read_body()
    headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
    if body or self.command in ("POST", "PUT", "PATCH"):
      headers["Content-Length"] = str(len(body))
    try:
      status, reason, response_headers, payload = self._ask_upstream(self.command, self.path, body,
                                                                     headers)
      layout_of = _STORAGE_LAYOUT.fullmatch(urllib.parse.urlsplit(self.path).path)
      if status == 404 and self.command == "GET" and layout_of:
        status, reason, response_headers, payload = self._flat_layout(layout_of[1], headers)
    except OSError as e:
      message = f"GCS emulator {self.server.upstream.geturl()} unreachable: {e}".encode()
      status, reason, payload = 502, "Bad Gateway", message
      response_headers = [("Content-Type", "text/plain")]
    self.send_response_only(status, reason)
    for name, value in response_headers:
      if name.lower() in _HOP_BY_HOP:
        continue
      if name.lower() == "location":
        value = self._through_proxy(value)
      self.send_header(name, value)
    self.send_header("Content-Length", str(len(payload)))
    self.end_headers()
    if self.command != "HEAD":
      self.wfile.write(payload)

  def _ask_upstream(self, method, path, body, headers):
    upstream = self.server.upstream
    connection = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=120)
    try:
      connection.request(method, path, body, headers)
      response = connection.getresponse()
      return response.status, response.reason, response.getheaders(), response.read()
    finally:
      connection.close()

  def _flat_layout(self, bucket, headers):
    """Google's storageLayout answer for an existing bucket without hierarchical namespace."""
    status, reason, response_headers, payload = self._ask_upstream("GET", f"/storage/v1/b/{bucket}",
                                                                   None, headers)
    if status != 200:
      return status, reason, response_headers, payload
    layout = {
        "kind": "storage#storageLayout",
        "bucket": urllib.parse.unquote(bucket),
        "location": "US",
        "locationType": "multi-region",
        "hierarchicalNamespace": {
            "enabled": False
        }
    }
    return 200, "OK", [("Content-Type", "application/json")], json.dumps(layout).encode()

  def _through_proxy(self, location):
    """An emulator URL in a Location header, as the Google URL that curl sent us."""
    url = urllib.parse.urlsplit(location)
    if url.scheme != "http":
      return location
    host = self.headers.get("Host", GOOGLE_STORAGE_HOSTS[0]).split(":")[0]
    return urllib.parse.urlunsplit(("https", host, url.path, url.query, url.fragment))

  do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _forward


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
  daemon_threads = True


def serve(upstream, certdir, verbose=False):
  """Starts the proxy on a free loopback port; returns the server (serve_forever to run)."""
  paths = write_certificates(certdir)
  server = _Server(("127.0.0.1", 0), _Handler)
  server.upstream = urllib.parse.urlsplit(upstream)
  server.verbose = verbose
  server.tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
  server.tls.load_cert_chain(paths["host.pem"], paths["host.key"])
  return server


def _exit_with_parent(parent):
  while os.getppid() == parent:
    time.sleep(1)
  os._exit(0)  # pylint: disable=protected-access


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--upstream", required=True, help="the emulator, http://HOST:PORT")
  parser.add_argument("--certdir", required=True, help="where to write ca.pem")
  parser.add_argument("--verbose", action="store_true")
  args = parser.parse_args()
  server = serve(args.upstream, args.certdir, args.verbose)
  threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
  print(server.server_address[1], flush=True)
  server.serve_forever()


if __name__ == "__main__":
  main()
