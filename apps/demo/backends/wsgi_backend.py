"""The demo's Python backend: a WSGI app on wsgiref that shows what the front forwarded.

Started by the demo's spawner as `python3 wsgi_backend.py PORT` on the first request to /py/,
stopped when idle. It trusts nothing and verifies nothing: it shows the headers as received.
"""

import html
import json
import sys
from wsgiref.simple_server import WSGIRequestHandler, make_server

SHOWN = ("REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "REMOTE_ADDR", "SERVER_NAME", "SERVER_PORT")


def app(environ, start_response):
    forwarded = {
        key[5:].replace("_", "-").title(): value
        for key, value in sorted(environ.items())
        if key.startswith(("HTTP_X_FORWARDED", "HTTP_X_TRAVERSAL", "HTTP_X_WSGIPROXY", "HTTP_FORWARDED", "HTTP_SIGNATURE"))
    }
    seen = {key: environ.get(key, "") for key in SHOWN}
    if "application/json" in environ.get("HTTP_ACCEPT", ""):
        body = json.dumps({"python": sys.version.split()[0], "environ": seen, "forwarded": forwarded}).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]
    rows = lambda items: "".join(
        f"<tr><th>{html.escape(k)}</th><td><code>{html.escape(v)}</code></td></tr>" for k, v in items
    )
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Python WSGI backend</title><link rel="stylesheet" href="/style.css"></head><body>
<h1>Python {html.escape(sys.version.split()[0])} WSGI backend (wsgiref)</h1>
<p>This process was started by the front on the first request and stops when idle. It sees the
request as it arrived, with the protocol headers the front added:</p>
<h2>Forwarded headers</h2><table>{rows(forwarded.items())}</table>
<h2>Its own WSGI environ</h2><table>{rows(seen.items())}</table>
<p><a href="/">Back to the start page</a></p></body></html>"""
    body = page.encode()
    start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(body)))])
    return [body]


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):
        sys.stdout.write("%s %s\n" % (self.address_string(), format % args))
        sys.stdout.flush()


if __name__ == "__main__":
    port = int(sys.argv[1])
    with make_server("127.0.0.1", port, app, handler_class=QuietHandler) as server:
        print(f"listening on 127.0.0.1:{port}", flush=True)
        server.serve_forever()
