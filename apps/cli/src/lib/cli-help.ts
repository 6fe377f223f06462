import { MIN_SECRET_BYTES } from '@wsgiproxy/core'
import { DEFAULT_LISTEN, formatListen } from './listen.ts'

/** A subcommand, or `main` for the command itself. */
export type HelpTopic =
  | 'main'
  | 'serve'
  | 'proxy'
  | 'spawn'
  | 'forward'
  | 'echo'
  | 'reload'
  | 'status'
  | 'keygen'
  | 'passwd'
  | 'schema'

const COMMON_HELP = `  --listen host:port     where to listen (default ${formatListen(DEFAULT_LISTEN)}; port 0 picks a free one)
  --log-format text|json request and event lines on stderr as text (default) or JSON lines
  --upgrade-protocol NAME  forward Upgrade requests for this protocol (repeatable; default
                         websocket); others are served with their Upgrade ignored
  --upgrade-idle DURATION  close an upgraded tunnel idle this long (default 5m; 0: never)
  --max-upgrades N       upgraded tunnels open at once; more get 503 (default 1000)
  --tls-cert FILE        serve HTTPS with this certificate (PEM), read again when it changes
                         or on SIGHUP
  --tls-key FILE         its private key (PEM); both or neither
  --http2                with TLS: also speak HTTP/2 (by ALPN), HTTP/1.1 on the same port
  --h2c                  without TLS: cleartext HTTP/2 only (prior knowledge; no HTTP/1.1)
  --admin host:port      serve GET /metrics (Prometheus), /healthz, /readyz and /status there,
                         never on the public port (default: off; port 0 picks a free one)
  -h, --help             show this help`

const KEY_HELP = `  --key-file FILE        sign forwarded requests with this key file (wsgiproxy keygen makes one)
  --string-key KEY       forward environ KEY as X-WSGIProxy-Str-N (repeatable)
  --unicode-key KEY      forward environ KEY as X-WSGIProxy-Unicode-N (repeatable)
  --json-key KEY         forward environ KEY as X-WSGIProxy-Json-N (repeatable)
  --forwarded            also send an RFC 7239 Forwarded header
  --x-forwarded          also send X-Forwarded-Host and X-Forwarded-Proto
  --compat wsgiproxy-0.1 speak WSGIProxy 0.1 to an old Python WSGIProxyMiddleware backend
                         (X-WSGIProxy-Version 0.1, X-Script-Name, UTF-8 values)`

/** What `--help` prints: the command's own usage (`main`) and each subcommand's. */
export const HELP: Readonly<Record<HelpTopic, string>> = {
  main: `usage: wsgiproxy <command> [options]

commands:
  serve     serve the routes of a config file (wsgiproxy.config.json)
  proxy     forward every request to one server (or a pool): wsgiproxy proxy http://127.0.0.1:9000
  spawn     start a backend on the first request: wsgiproxy spawn -- python3 app.py __PORT__
  forward   a real HTTP forward proxy with CONNECT (curl -x http://127.0.0.1:8080 https://example.test/)
  echo      answer with the restored environ (HTML, or JSON for Accept: application/json)
  reload    make a running wsgiproxy serve read its config again (SIGHUP), without a dropped request
  status    show the routes, targets and backends of a server started with --admin
  keygen    print or write a key file with a fresh 32-byte secret
  passwd    print a user line for forward --auth-file, the password read on stdin
  schema    print the JSON Schema of the config file

Run wsgiproxy <command> --help for its options.`,
  serve: `usage: wsgiproxy serve [--config FILE] [options]

Serves the routes of a config file; see the README for the format and schema.json for editors.

  -c, --config FILE      the config file (default wsgiproxy.config.json)
  --workers N|auto       serve from N worker processes sharing the port (auto: one per core);
                         this process owns the spawned backends and replaces a worker that dies
  --drain-timeout DURATION  on shutdown and reload, how long requests and WebSocket connections
                         in flight may go on (default 10s)
  --pid-file FILE        write the process id here (for wsgiproxy reload --pid-file FILE)
${COMMON_HELP}
  (--listen, --log-format, --workers, --drain-timeout, --admin and the upgrade flags override the
  config file)

SIGHUP (or wsgiproxy reload) reads the config file again: new requests take the new routes while
those in flight finish on the old ones (with --workers, new workers start and the old ones drain
and exit); an invalid config is logged and the running one stays. listen, tls, http2 and
logFormat take a restart.`,
  proxy: `usage: wsgiproxy proxy <href> [<href>...] [options]

Forwards every request to href (http://host:port/path?query) with the wsgiproxy protocol
headers (X-Forwarded-*, X-Traversal-*, extra keys, signature). Several hrefs make a pool:
each request goes to one of them, a failing one is left out for a while, and a request that
never reached one is tried on another (docs/pools.md; weights and more in a config file).

  --balance STRATEGY     least-outstanding (default), round-robin, or sticky by a hash of
                         client-address, header:NAME or cookie:NAME
  --health-path PATH     check every href with GET PATH; a failing one takes no requests
  --health-interval DURATION  between two checks (default 5s)
  --max-concurrent N     requests in flight per href; more wait (up to 100), then get 503
  --upstream-http2       speak HTTP/2 to the hrefs: by ALPN to https://, h2c to http:// (gRPC)
  --upstream-ca FILE     trust this CA (PEM) for https:// hrefs (repeatable)
  --upstream-cert FILE   a client certificate (PEM) for mutual TLS, with --upstream-key FILE
${KEY_HELP}
${COMMON_HELP}`,
  spawn: `usage: wsgiproxy spawn [options] -- <command...>

Starts the command on the first request (its port in __PORT__ and $PORT), forwards to it,
and stops it when idle or when wsgiproxy stops.

  --idle DURATION        stop the backend after this long without requests (500ms, 30s, 5m)
  --start-timeout DURATION  how long a start may take (default 60s)
  --ready-path PATH      also wait until GET PATH answers below 500
  --name NAME            the backend's name in log lines
  --instances N|MIN-MAX  run N backend processes, or MIN growing to MAX under load (least-busy
                         routing, extras stopped when idle; each gets its own __PORT__)
${KEY_HELP}
${COMMON_HELP}`,
  forward: `usage: wsgiproxy forward [options]

A real HTTP forward proxy on the exact proxy: requests in absolute form
(GET http://host:port/path HTTP/1.1) are sent to the server they name, and CONNECT host:port
opens a tunnel (how clients reach https:// URLs). Use it as
curl -x http://127.0.0.1:8080 https://example.test/.
Only public addresses are reached unless --allow says more: loopback, private, link-local and
other internal targets get 403 in any spelling, also through a name that resolves to one, and
the connection goes to the address checked. A request that would come back to this proxy gets 508.

  --allow ENTRY          also allow this target (repeatable): a host name (example.com,
                         *.example.com), an address or CIDR range (127.0.0.1, 10.0.0.0/8,
                         ::1) or a preset (public, loopback, linklocal, uniquelocal),
                         optionally with :port, :port,port or :* ([::1]:8080); giving
                         --allow replaces the default public, so add it back to keep it
  --deny ENTRY           never connect to this target, even when allowed (repeatable; the
                         same entries; a name is refused before it is looked up)
  --connect-port N       a port CONNECT tunnels may go to (repeatable; default 443 only)
  --auth-file FILE       require Proxy-Authorization: Basic for a user of FILE (lines
                         user:scrypt$N$r$p$salt$hash, made by wsgiproxy passwd USER);
                         others get 407
${COMMON_HELP}
  (CONNECT tunnels are the upgraded tunnels here: --upgrade-idle and --max-upgrades bound them)`,
  echo: `usage: wsgiproxy echo [options]

The sample app behind the proxy middleware: answers with the restored environ as an HTML
table, or as JSON when the request sends Accept: application/json.

  --trust-ip ADDR        believe protocol headers from this address, CIDR range or preset
                         (loopback, linklocal, uniquelocal; repeatable; default loopback)
  --key-file FILE        also require a valid signature made with this key file
  --replay-redis URL     keep the nonces of verified signatures in this Redis (redis:// or
                         rediss://), shared by every replica, so a request replayed from one
                         to another gets 401; while it cannot be reached, signed requests get
                         503 (code REPLAY_STORE_UNAVAILABLE). Default: in this process only
  --compat wsgiproxy-0.1 also accept WSGIProxy 0.1 requests (an old Python WSGIProxyApp front)
                         from --trust-ip peers, trusted by address only
${COMMON_HELP}`,
  keygen: `usage: wsgiproxy keygen [--out FILE] [--force] [--id KEYID]

Prints a key file line (keyid base64:secret) with a fresh ${MIN_SECRET_BYTES}-byte secret, or writes it
to FILE with mode 0600.

  -o, --out FILE         write the key file here instead of printing it
  -f, --force            overwrite FILE if it exists
  --id KEYID             the key id (default k<today's date>)
  -h, --help             show this help`,
  passwd: `usage: wsgiproxy passwd USER

Reads a password from the first line of stdin (without echo from a terminal) and prints the
line USER:scrypt$N$r$p$salt$hash for wsgiproxy forward --auth-file (scrypt, N=16384, r=8, p=1,
a random 16-byte salt; salt and hash in base64):

  wsgiproxy passwd alice >> users

  -h, --help             show this help`,
  reload: `usage: wsgiproxy reload (--pid-file FILE | PID)

Sends SIGHUP to a running wsgiproxy serve, which reads its config file again without dropping a
request. Its log says whether the new config was taken or refused (and why).

  --pid-file FILE        the file wsgiproxy serve --pid-file FILE wrote
  -h, --help             show this help`,
  status: `usage: wsgiproxy status [--admin host:port|URL] [--json]

Asks a running wsgiproxy for its status on its admin listener (serve --admin host:port, or
"admin": { "listen": "host:port" } in the config file) and prints its routes, their targets
with state, requests in flight, requests, failures and ejections, the spawned backends, and
what is not ready.

  --admin host:port|URL  the admin address (default 127.0.0.1:9464)
  --json                 print the JSON of GET /status instead of the table
  -h, --help             show this help`,
  schema: `usage: wsgiproxy schema

Prints the JSON Schema of wsgiproxy.config.json (the package also ships it as schema.json).`,
}
