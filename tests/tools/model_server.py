#!/usr/bin/env python3
"""model_server.py - a small HTTP file server for the model download tests.

Serves files from --dir with Range support (resumable downloads) and a
generated "<file>.sha256" sidecar for every file. Test knobs:
  --die-after N   exit abruptly once N body bytes have been sent in total
                  (a server killed mid-download)
  --corrupt       flip bytes of every served file body (the sidecar still
                  gives the true hash)
  --slow          sleep a little between chunks (concurrent pulls overlap)
Writes the chosen port to --port-file and logs each request line and its
Range header to --log.
"""
import argparse
import hashlib
import http.server
import os
import sys
import threading
import time

args = None
sent_total = 0
sent_lock = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *a):
        if args.log:
            with open(args.log, "a") as f:
                f.write("%s range=%s\n" % (self.requestline, self.headers.get("Range", "-")))

    def do_HEAD(self):
        self.serve(head=True)

    def do_GET(self):
        self.serve(head=False)

    def serve(self, head):
        name = os.path.basename(self.path.split("?")[0])
        if name.endswith(".sha256"):
            path = os.path.join(args.dir, name[: -len(".sha256")])
            if not os.path.isfile(path):
                return self.not_found()
            with open(path, "rb") as f:
                body = (hashlib.sha256(f.read()).hexdigest() + "  " + name[:-7] + "\n").encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)
            return
        path = os.path.join(args.dir, name)
        if not os.path.isfile(path):
            return self.not_found()
        size = os.path.getsize(path)
        start = 0
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            start = int(rng[6:].split("-")[0] or 0)
            if start >= size:
                self.send_response(416)
                self.send_header("Content-Range", "bytes */%d" % size)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", "bytes %d-%d/%d" % (start, size - 1, size))
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(size - start))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if head:
            return
        self.send_body(path, start)

    def send_body(self, path, start):
        global sent_total
        with open(path, "rb") as f:
            f.seek(start)
            while True:
                chunk = f.read(65536)
                if not chunk:
                    break
                if args.corrupt:
                    chunk = bytes(b ^ 0x5A for b in chunk)
                if args.die_after is not None:
                    with sent_lock:
                        room = args.die_after - sent_total
                        if room <= len(chunk):
                            self.wfile.write(chunk[: max(room, 0)])
                            self.wfile.flush()
                            os._exit(0)
                        sent_total += len(chunk)
                self.wfile.write(chunk)
                if args.slow:
                    time.sleep(0.01)

    def not_found(self):
        body = b"not found\n"
        self.send_response(404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main():
    global args
    p = argparse.ArgumentParser()
    p.add_argument("--dir", required=True)
    p.add_argument("--port-file", required=True)
    p.add_argument("--log")
    p.add_argument("--die-after", type=int)
    p.add_argument("--corrupt", action="store_true")
    p.add_argument("--slow", action="store_true")
    args = p.parse_args()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.handle_error = lambda request, address: None   # clients that hang up are expected
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(server.server_address[1]))
    os.rename(tmp, args.port_file)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
