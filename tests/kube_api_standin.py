"""A stand-in for the few Kubernetes API calls the image-rewrite webhook
makes (read a namespace; read, create and replace Secrets), over HTTPS, for
the webhook's tests where no API server can run. It answers from objects in
a JSON file, in the API's shapes, with the API's Status bodies for errors
(404 NotFound, 409 AlreadyExists and Conflict), and records every request
(method, path, body) as a JSON line. A test double of those endpoints, not
of an API server: no authentication, no admission, no other resource.

    python kube_api_standin.py STATE.json LOG.jsonl CERT.pem KEY.pem PORT_FILE

Listens on 127.0.0.1 on a free port, written to PORT_FILE once it listens.
"""

import json
import os
import re
import ssl
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STATE_PATH, LOG_PATH, CERT, KEY, PORT_FILE = sys.argv[1:6]
LOCK = threading.Lock()
with open(STATE_PATH) as f:
    OBJECTS = json.load(f)
NAMESPACE = re.compile(r"^/api/v1/namespaces/([^/]+)$")
SECRET = re.compile(r"^/api/v1/namespaces/([^/]+)/secrets/([^/]+)$")
SECRETS = re.compile(r"^/api/v1/namespaces/([^/]+)/secrets$")


def status(code, reason, message):
    return code, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                  "message": message, "reason": reason, "code": code}


def find(kind, namespace, name):
    for obj in OBJECTS:
        meta = obj["metadata"]
        if obj["kind"] == kind and meta["name"] == name and meta.get("namespace") == namespace:
            return obj
    return None


def save():
    with open(STATE_PATH, "w") as f:
        json.dump(OBJECTS, f, indent=1)


def answer(method, path, body):
    if method == "GET" and NAMESPACE.match(path):
        name = NAMESPACE.match(path).group(1)
        obj = find("Namespace", None, name)
        return (200, obj) if obj else status(404, "NotFound", f'namespaces "{name}" not found')
    if method == "GET" and SECRET.match(path):
        namespace, name = SECRET.match(path).groups()
        obj = find("Secret", namespace, name)
        return (200, obj) if obj else status(404, "NotFound", f'secrets "{name}" not found')
    if method == "POST" and SECRETS.match(path):
        namespace = SECRETS.match(path).group(1)
        name = body["metadata"]["name"]
        if find("Secret", namespace, name):
            return status(409, "AlreadyExists", f'secrets "{name}" already exists')
        body["metadata"].update({"namespace": namespace, "resourceVersion": "1", "uid": f"new-{name}"})
        OBJECTS.append(body)
        save()
        return 201, body
    if method == "PUT" and SECRET.match(path):
        namespace, name = SECRET.match(path).groups()
        obj = find("Secret", namespace, name)
        if obj is None:
            return status(404, "NotFound", f'secrets "{name}" not found')
        if body["metadata"].get("resourceVersion") != obj["metadata"].get("resourceVersion"):
            return status(409, "Conflict", f'Operation cannot be fulfilled on secrets "{name}": the object has been modified; '
                                           "please apply your changes to the latest version and try again")
        body["metadata"]["resourceVersion"] = str(int(obj["metadata"]["resourceVersion"]) + 1)
        OBJECTS[OBJECTS.index(obj)] = body
        save()
        return 200, body
    return status(404, "NotFound", "the server could not find the requested resource")


class Handler(BaseHTTPRequestHandler):
    def handle_one(self, method):
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        with LOCK:
            with open(LOG_PATH, "a") as log:
                log.write(json.dumps({"method": method, "path": self.path, "body": body}) + "\n")
            code, reply = answer(method, self.path, body)
        data = json.dumps(reply).encode()
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.handle_one("GET")

    def do_POST(self):
        self.handle_one("POST")

    def do_PUT(self):
        self.handle_one("PUT")

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(CERT, KEY)
server.socket = context.wrap_socket(server.socket, server_side=True)
with open(PORT_FILE + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
os.rename(PORT_FILE + ".tmp", PORT_FILE)
server.serve_forever()
