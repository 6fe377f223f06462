// Option names of other proxies (http-proxy, http-proxy-middleware, hono/proxy,
// @fastify/http-proxy and its @fastify/reply-from), each with what to use here instead:
// `explainIssues` in options.ts gives the first entry that fits the object the name was found in.

/** Where an options object is written: JavaScript (`code`) or the CLI's JSON config file. */
export type OptionScope = 'code' | 'config'

/** What to say of a foreign option name. */
export interface ForeignOption {
  /** The names (compared as written: `target`, not `Target`). */
  readonly names: readonly string[]
  /** Our option to use instead (`timeouts.upstreamHeaders`); the entry fits only where it is. */
  readonly use?: string
  /** Options that must exist for the entry to fit: it speaks of them, or of their function. */
  readonly needs?: readonly string[]
  /** Only for JavaScript options or only for the config file. Default both. */
  readonly scope?: OptionScope
  /** The hint, in the parentheses after `unknown option "x"`. */
  readonly text: string
}

const TARGET = ['target', 'upstream', 'url']
const MOUNT = ['prefix', 'pathFilter', 'context', 'route', 'mountPath']
const WEBSOCKET = ['ws', 'websocket', 'wsUpstream']
const WEBSOCKET_SETTINGS = ['wsClientOptions', 'wsServerOptions', 'wsHooks', 'wsReconnect']
const AGENT = ['agent', 'localAddress', 'undici', 'http', 'secure']
const REQUEST_CHANGE = ['headers', 'auth', 'onProxyReq', 'proxyReq', 'rewriteRequestHeaders']
const RESPONSE_CHANGE = [
  'onProxyRes',
  'proxyRes',
  'selfHandleResponse',
  'rewriteHeaders',
  'onResponse',
]
const LOCATION = ['autoRewrite', 'hostRewrite', 'protocolRewrite', 'internalRewriteLocationHeader']

/** The table, most specific entry of a name first. */
export const FOREIGN_OPTIONS: readonly ForeignOption[] = [
  {
    names: TARGET,
    use: 'href',
    text: 'use "href", the URL to forward to; its path goes in front of the request path',
  },
  {
    names: TARGET,
    needs: ['allow'],
    text: 'exactProxy forwards to the host each request names; "allow" says which it may reach',
  },
  {
    names: TARGET,
    needs: ['command'],
    text: 'the spawner forwards to the backend it starts with "command"',
  },
  {
    names: ['changeOrigin'],
    needs: ['href'],
    text: "the Host sent is always the href's, as with changeOrigin: true; the client's goes in X-Forwarded-Server",
  },
  {
    names: ['changeOrigin'],
    needs: ['command'],
    text: "the Host sent is always the backend's; the client's goes in X-Forwarded-Server",
  },
  {
    names: ['changeOrigin'],
    needs: ['allow'],
    text: "exactProxy sends the client's Host as it came; createProxyApp sends the href's",
  },
  {
    names: ['xfwd'],
    needs: ['forwarded'],
    text: 'X-Forwarded-For, -Server, -Scheme and -Script-Name are always sent; "forwarded" adds an RFC 7239 Forwarded header',
  },
  {
    names: ['xfwd'],
    needs: ['allow', 'via'],
    text: 'exactProxy adds no X-Forwarded-* header: it sends the request as it came, with a Via entry (see "via")',
  },
  {
    names: ['pathRewrite'],
    needs: ['href'],
    scope: 'code',
    text: 'the prefix the app is mounted under (a Hono route of proxy(), toFetchHandler\'s scriptName) is cut off and sent as X-Forwarded-Script-Name, and the href\'s path goes in front: give the new prefix in "href"',
  },
  {
    names: ['pathRewrite'],
    needs: ['path', 'href'],
    scope: 'config',
    text: 'the route\'s "path" is cut off and sent as X-Forwarded-Script-Name, and the href\'s path goes in front: give the new prefix in "href"',
  },
  {
    names: ['pathRewrite'],
    needs: ['path'],
    scope: 'config',
    text: 'the route\'s "path" is cut off and sent as X-Forwarded-Script-Name',
  },
  {
    names: ['rewritePrefix', 'prependPath'],
    use: 'href',
    text: 'give the prefix as the path of "href": it goes in front of the request path',
  },
  {
    names: ['ignorePath'],
    needs: ['href'],
    text: 'no equivalent: the request path always follows the path of "href"',
  },
  {
    names: MOUNT,
    use: 'path',
    scope: 'config',
    text: 'use "path", the prefix the route answers under',
  },
  {
    names: MOUNT,
    scope: 'code',
    text: "mount the app where it answers: a Hono route (app.all('/api/*', proxy(...))) or toFetchHandler's scriptName",
  },
  {
    names: ['router', 'getUpstream'],
    needs: ['href'],
    scope: 'code',
    text: 'route in the app in front instead: one proxy() per Hono route, or an environ app choosing among createProxyApp apps',
  },
  {
    names: ['router', 'getUpstream'],
    needs: ['path'],
    scope: 'config',
    text: 'give each upstream a route of its own, with its "path"',
  },
  {
    names: WEBSOCKET,
    needs: ['href', 'transport'],
    text: 'Upgrade (WebSocket) requests are forwarded when serve() from @wsgiproxy/node serves createProxyApp (see its upgradeProtocols)',
  },
  {
    names: WEBSOCKET,
    needs: ['command', 'transport'],
    text: "Upgrade (WebSocket) requests are forwarded when serve() from @wsgiproxy/node serves the spawner's app",
  },
  {
    names: WEBSOCKET,
    use: 'upgradeProtocols',
    text: 'serve() forwards Upgrade (WebSocket) requests already; "upgradeProtocols" names the protocols',
  },
  {
    names: [...WEBSOCKET, ...WEBSOCKET_SETTINGS],
    scope: 'config',
    text: 'Upgrade (WebSocket) requests are forwarded already, byte for byte; the top-level "upgrade" section configures them',
  },
  {
    names: WEBSOCKET_SETTINGS,
    scope: 'code',
    text: 'no equivalent: serve() from @wsgiproxy/node tunnels WebSockets byte for byte',
  },
  {
    names: AGENT,
    needs: ['transport'],
    text: 'connections are the transport\'s: "transport" takes undiciTransport({ dispatcher }) from @wsgiproxy/node with an undici Agent of your own',
  },
  {
    names: ['ssl', 'https'],
    scope: 'code',
    text: "TLS towards clients is the server's: serve() listens on plain HTTP; give toNodeListener() to a node:https server",
  },
  {
    names: ['http2'],
    needs: ['transport'],
    text: 'no equivalent: upstream requests use HTTP/1.1 (see "transport")',
  },
  {
    names: ['customFetch', 'fetch'],
    use: 'transport',
    text: 'use "transport": fetchTransport({ fetch }) sends every request through your fetch',
  },
  {
    names: REQUEST_CHANGE,
    use: 'transport',
    text: 'change the outbound request in a "transport" that wraps undiciTransport() or fetchTransport()',
  },
  {
    names: RESPONSE_CHANGE,
    use: 'transport',
    text: 'change the response in a "transport" that wraps undiciTransport() or fetchTransport()',
  },
  {
    names: ['on', 'replyOptions'],
    needs: ['onError', 'transport'],
    text: 'failures go to "onError"; change requests and responses in a "transport" that wraps another',
  },
  {
    names: ['proxyTimeout', 'timeout'],
    use: 'timeouts.upstreamHeaders',
    text: 'use "timeouts": { upstreamHeaders: ms }, how long the upstream may take to answer',
  },
  {
    names: ['proxyTimeout', 'timeout'],
    use: 'timeouts.headers',
    scope: 'config',
    text: 'use "timeouts": { "headers": ... }, how long the upstream may take to answer',
  },
  {
    names: ['timeout'],
    use: 'clientRequestTimeout',
    text: 'use "clientRequestTimeout" for the client, and the proxy app\'s timeouts for the upstream',
  },
  {
    names: ['followRedirects'],
    needs: ['rewriteLocation'],
    text: 'redirects go to the client, "rewriteLocation" turning backend URLs into public paths',
  },
  {
    names: ['followRedirects'],
    needs: ['allow'],
    text: 'redirects go to the client as they came',
  },
  {
    names: LOCATION,
    use: 'rewriteLocation',
    text: 'use "rewriteLocation" (default true): a Location naming the backend becomes a path on the public side',
  },
  {
    names: ['cookieDomainRewrite', 'cookiePathRewrite'],
    needs: ['forwarded'],
    text: 'no equivalent: the backend learns the public host and path from X-Forwarded-Server and X-Forwarded-Script-Name (proxyMiddleware restores them) and sets its cookies for them',
  },
  {
    names: ['logLevel', 'logProvider', 'logger'],
    use: 'onError',
    text: 'failures go to "onError", by default logErrors() from @wsgiproxy/core: one line per status ≥ 500',
  },
  {
    names: ['toProxy'],
    needs: ['href'],
    scope: 'code',
    text: 'exactProxy forwards to the host each request names, as a forward proxy does',
  },
  {
    names: ['forward'],
    needs: ['href'],
    text: 'no equivalent: each request goes to one upstream, "href"',
  },
  {
    names: ['buffer', 'proxyPayloads'],
    text: 'no equivalent: request bodies are always streamed as they arrive',
  },
  {
    names: ['preHandler', 'preValidation', 'beforeHandler'],
    scope: 'code',
    text: 'check requests in Hono middleware before proxy(), or in an environ app that calls this one',
  },
  {
    names: ['httpMethods'],
    text: 'every method is forwarded; choose methods in the routes in front (Hono app.on())',
  },
  {
    names: ['raw'],
    scope: 'code',
    text: 'the whole request (method, headers, body) is forwarded; there is nothing to pass',
  },
  {
    names: ['strictConnectionProcessing'],
    text: 'always on: the headers Connection names are removed (Host, Content-Length and Content-Type excepted)',
  },
  {
    names: ['cmd', 'exec', 'run', 'script'],
    use: 'command',
    text: 'use "command", the backend command line',
  },
]
