// A real Redis for tests: Debian's `redis-server` as a child process on a free 127.0.0.1 port,
// without persistence, optionally as a one-node Redis Cluster owning every slot. Stopped by pid;
// `stop()` and `start()` make an outage and the recovery from it on the same port.
import { spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { createConnection, createServer } from 'node:net'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

/** Options of {@link startRedis}. */
export interface StartRedisOptions {
  /**
   * Run it as a one-node Redis Cluster (`--cluster-enabled yes`) that owns all 16384 slots, so a
   * cluster client (`createCluster`) works against it. Default `false`.
   */
  cluster?: boolean
  /** The `redis-server` binary. Default `redis-server` from `PATH`. */
  command?: string
}

/** A running Redis started by {@link startRedis}. */
export interface RedisServer {
  /** `redis://127.0.0.1:<port>`. */
  readonly url: string
  /** The port, the same after `stop()` and `start()`. */
  readonly port: number
  /** The pid of the running server (of the last one after `stop()`). */
  readonly pid: number
  /** Stops the server (SIGTERM by pid, SIGKILL after 5 s) and waits for its exit; idempotent. */
  stop(): Promise<void>
  /** Starts it again on the same port and waits until it answers (and the cluster is ok). */
  start(): Promise<void>
  /** Stops it and removes its directory. */
  close(): Promise<void>
}

const READY = /Ready to accept connections/
const PORT_IN_USE = /Address already in use/
const START_TIMEOUT_MS = 10_000
const PORT_ATTEMPTS = 5

const running = new Set<ChildProcess>()

/**
 * Starts `redis-server` on a free 127.0.0.1 port with `--save '' --appendonly no` and waits
 * until it is ready (its "Ready to accept connections" line, then a `PING`). With
 * `cluster: true` it is a real one-node cluster: `CLUSTER ADDSLOTSRANGE 0 16383`, then waits for
 * `cluster_state:ok`. A port taken between choosing and binding it is retried with another.
 *
 * @param options - cluster mode, the binary
 * @returns the running server
 */
export async function startRedis(options: StartRedisOptions = {}): Promise<RedisServer> {
  const dir = mkdtempSync(join(tmpdir(), 'wsgiproxy-redis-'))
  const cluster = options.cluster ?? false
  const command = options.command ?? 'redis-server'
  let child: ChildProcess | undefined
  let port = 0
  for (let attempt = 1; child === undefined; attempt++) {
    port = await freePort()
    try {
      child = await launch(command, args(port, dir, cluster))
    } catch (error) {
      if (!(error instanceof PortInUseError) || attempt >= PORT_ATTEMPTS) {
        rmSync(dir, { recursive: true, force: true })
        throw error
      }
    }
  }
  if (cluster) {
    await redisCommand(port, 'CLUSTER', 'ADDSLOTSRANGE', '0', '16383')
    await clusterOk(port)
  }
  let current: ChildProcess = child
  const stop = async (): Promise<void> => {
    await kill(current)
  }
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    get pid() {
      return current.pid ?? 0
    },
    stop,
    async start() {
      if (current.exitCode === null && current.signalCode === null) return
      current = await launch(command, args(port, dir, cluster))
      // The slots are in the cluster config file it reads again.
      if (cluster) await clusterOk(port)
    },
    async close() {
      await stop()
      rmSync(dir, { recursive: true, force: true })
    },
  }
}

/** Stops every Redis still running (by pid) and waits for their exits. */
export async function stopAllRedis(): Promise<void> {
  await Promise.all([...running].map((child) => kill(child)))
}

/**
 * Sends one command to Redis over a new connection and reads one reply (simple string, error,
 * integer or bulk string; an error reply rejects).
 *
 * @param port - the port on 127.0.0.1
 * @param words - the command and its arguments
 * @returns the reply as text, or `null` for a nil reply
 */
export function redisCommand(port: number, ...words: string[]): Promise<string | null> {
  return new Promise((resolve, reject) => {
    const socket = createConnection({ port, host: '127.0.0.1' })
    let data = Buffer.alloc(0)
    const done = (error: Error | undefined, reply?: string | null): void => {
      socket.destroy()
      if (error === undefined) resolve(reply ?? null)
      else reject(error)
    }
    socket.setTimeout(5_000, () =>
      done(new Error(`redis on port ${port} did not answer ${words[0]}`)),
    )
    socket.once('error', (error) => done(error))
    socket.on('data', (chunk: Buffer) => {
      data = Buffer.concat([data, chunk])
      const reply = parseReply(data)
      if (reply === undefined) return
      if (reply instanceof Error) done(reply)
      else done(undefined, reply)
    })
    socket.write(
      `*${words.length}\r\n${words.map((w) => `$${Buffer.byteLength(w)}\r\n${w}\r\n`).join('')}`,
    )
  })
}

class PortInUseError extends Error {}

function args(port: number, dir: string, cluster: boolean): string[] {
  return [
    '--port',
    String(port),
    '--bind',
    '127.0.0.1',
    '--save',
    '',
    '--appendonly',
    'no',
    '--dir',
    dir,
    ...(cluster
      ? [
          '--cluster-enabled',
          'yes',
          '--cluster-config-file',
          join(dir, 'nodes.conf'),
          // A lone node does not know its own address until a peer tells it: announce it.
          '--cluster-announce-ip',
          '127.0.0.1',
        ]
      : []),
  ]
}

// Starts redis-server and resolves once it logged that it is ready and answers PING.
async function launch(command: string, argv: string[]): Promise<ChildProcess> {
  const child = spawn(command, argv, { stdio: ['ignore', 'pipe', 'pipe'] })
  running.add(child)
  child.once('exit', () => running.delete(child))
  const port = Number(argv[argv.indexOf('--port') + 1])
  try {
    await new Promise<void>((resolve, reject) => {
      let output = ''
      const timer = setTimeout(() => {
        reject(new Error(`redis-server was not ready after ${START_TIMEOUT_MS} ms:\n${output}`))
      }, START_TIMEOUT_MS)
      const onData = (chunk: Buffer): void => {
        output += chunk.toString('utf8')
        if (READY.test(output)) {
          clearTimeout(timer)
          resolve()
        }
      }
      child.stdout?.on('data', onData)
      child.stderr?.on('data', onData)
      child.once('error', (error) => {
        clearTimeout(timer)
        reject(error)
      })
      child.once('exit', (code, signal) => {
        clearTimeout(timer)
        const why = `redis-server exited (${signal ?? `code ${code}`}) before it was ready:\n${output}`
        reject(PORT_IN_USE.test(output) ? new PortInUseError(why) : new Error(why))
      })
    })
    const pong = await redisCommand(port, 'PING')
    if (pong !== 'PONG') throw new Error(`redis-server answered PING with ${String(pong)}`)
  } catch (error) {
    await kill(child)
    throw error
  }
  child.stdout?.resume()
  child.stderr?.resume()
  return child
}

async function kill(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  process.kill(child.pid, 'SIGTERM')
  const force = setTimeout(() => {
    if (child.pid !== undefined && child.exitCode === null) process.kill(child.pid, 'SIGKILL')
  }, 5_000)
  await exited
  clearTimeout(force)
}

// Polls CLUSTER INFO until the node serves every slot (it says so within a second or so).
async function clusterOk(port: number): Promise<void> {
  const deadline = Date.now() + START_TIMEOUT_MS
  for (;;) {
    const info = (await redisCommand(port, 'CLUSTER', 'INFO')) ?? ''
    if (/cluster_state:ok/.test(info)) return
    if (Date.now() > deadline) throw new Error(`the one-node cluster is not ok:\n${info}`)
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

// One RESP reply from the start of `data`, or undefined while it is incomplete.
function parseReply(data: Buffer): string | null | Error | undefined {
  const end = data.indexOf('\r\n')
  if (end < 0) return undefined
  const head = data.subarray(1, end).toString('utf8')
  switch (String.fromCharCode(data[0] ?? 0)) {
    case '+':
    case ':':
      return head
    case '-':
      return new Error(head)
    case '$': {
      const length = Number(head)
      if (length < 0) return null
      if (data.length < end + 2 + length + 2) return undefined
      return data.subarray(end + 2, end + 2 + length).toString('utf8')
    }
    default:
      return new Error(`unexpected reply ${JSON.stringify(data.toString('utf8'))}`)
  }
}

// A port nothing listens on now: listen on port 0, read it, close.
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo
      server.close(() => resolve(port))
    })
  })
}
