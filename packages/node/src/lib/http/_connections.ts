// Closing a server's connections on `served.close()`: idle ones at once, the rest after the
// close timeout. node:http and node:https servers do it themselves; an HTTP/2 server (with
// HTTP/1.1 beside it over TLS) has sessions and plain sockets to track.
import type { Server } from 'node:http'
import type { Http2SecureServer, Http2Server, ServerHttp2Session } from 'node:http2'
import type { Server as HttpsServer } from 'node:https'
import type { Socket } from 'node:net'
import type { TLSSocket } from 'node:tls'

/** What `close()` does to the connections. */
export interface Connections {
  /** Closes the connections with nothing in flight (an HTTP/2 session: GOAWAY, then done). */
  closeIdle(): void
  /**
   * Sends GOAWAY on every HTTP/2 session (they end once their streams have). HTTP/1.1 beside an
   * HTTP/2 server (which has no keep-alive timeout of its own): a connection with no request in
   * flight `idleMs` from now is closed. (A node:http server's own
   * keep-alive timeout does that for its connections.)
   */
  drainIdle(idleMs: number): void
  /** Cuts every connection. */
  closeAll(): void
}

/**
 * The connections of a server from `serve`.
 *
 * @param server - the server
 * @param http2 - whether it is an HTTP/2 server (with HTTP/1.1 beside it over TLS)
 * @returns how to close them
 */
export function trackConnections(
  server: Server | HttpsServer | Http2SecureServer | Http2Server,
  http2: boolean,
): Connections {
  if (!http2) {
    const http = server as Server
    return {
      closeIdle: () => http.closeIdleConnections(),
      drainIdle: () => {},
      closeAll: () => http.closeAllConnections(),
    }
  }
  const sessions = new Set<ServerHttp2Session>()
  // HTTP/1.1 sockets and their requests in flight.
  const sockets = new Map<Socket, number>()
  const h2 = server as Http2SecureServer
  h2.on('session', (session: ServerHttp2Session) => {
    sessions.add(session)
    session.once('close', () => sessions.delete(session))
  })
  h2.on('secureConnection', (socket: TLSSocket) => {
    if (socket.alpnProtocol === 'h2') return
    sockets.set(socket, 0)
    socket.once('close', () => sockets.delete(socket))
  })
  h2.on(
    'request',
    (
      req: { httpVersionMajor: number; socket: Socket },
      res: { once(event: 'close', listener: () => void): unknown },
    ) => {
      if (req.httpVersionMajor !== 1) return
      const socket = req.socket
      sockets.set(socket, (sockets.get(socket) ?? 0) + 1)
      res.once('close', () => {
        if (sockets.has(socket)) sockets.set(socket, (sockets.get(socket) ?? 1) - 1)
      })
    },
  )
  return {
    closeIdle: () => {
      for (const session of sessions) if (!session.closed) session.close()
      for (const [socket, inFlight] of sockets) if (inFlight === 0) socket.destroy()
    },
    drainIdle: (idleMs) => {
      for (const session of sessions) if (!session.closed) session.close()
      // Its own timer, not the socket's timeout, whose expiry node:http takes as a request timeout.
      // A request that came meanwhile was answered with `Connection: close`, which closes it.
      const timer = setTimeout(() => {
        for (const [socket, inFlight] of sockets) if (inFlight === 0) socket.destroy()
      }, idleMs)
      timer.unref()
    },
    closeAll: () => {
      for (const session of sessions) session.destroy()
      for (const socket of sockets.keys()) socket.destroy()
    },
  }
}
