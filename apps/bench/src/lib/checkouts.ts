// Servers of other checkouts of this repository in one run (`pnpm bench:compare`): a server id
// with a checkout's name after `@` (`wsgiproxy-node@A`) is that server as built in that
// checkout, started from the checkout's own `apps/bench/dist/serve-one.js`.
import { join } from 'node:path'

/** A checkout's name (as in `wsgiproxy-node@A`) and its repository root. */
export interface Checkout {
  name: string
  root: string
}

/**
 * Reads `--checkouts A=/path/a,B=/path/b`.
 *
 * @param raw - the option's value
 * @returns the checkouts in the order given
 * @throws Error naming what is wrong with the value
 */
export function parseCheckouts(raw: string): Checkout[] {
  const checkouts = raw
    .split(',')
    .filter((part) => part !== '')
    .map((part) => {
      const at = part.indexOf('=')
      const name = at < 0 ? '' : part.slice(0, at)
      const root = at < 0 ? '' : part.slice(at + 1)
      if (!/^[A-Za-z0-9_-]+$/.test(name) || root === '') {
        throw new Error(
          `--checkouts: expected NAME=DIRECTORY pairs such as A=/tmp/a (got "${part}")`,
        )
      }
      return { name, root }
    })
  const names = checkouts.map((c) => c.name)
  const repeated = names.filter((name, i) => names.indexOf(name) !== i)
  if (repeated.length > 0) throw new Error(`--checkouts: ${repeated[0]} is named twice`)
  if (checkouts.length === 0) throw new Error('--checkouts: expected at least one NAME=DIRECTORY')
  return checkouts
}

/**
 * Each server once per checkout: id `<id>@<name>`, label `<label> @ <name>`, everything else
 * as the server's.
 *
 * @param servers - the servers this checkout knows
 * @param checkouts - the checkouts
 * @returns the servers of every checkout, checkout by checkout
 */
export function serversOfCheckouts<T extends { id: string; label: string }>(
  servers: readonly T[],
  checkouts: readonly Checkout[],
): T[] {
  return checkouts.flatMap(({ name }) =>
    servers.map((server) => ({
      ...server,
      id: `${server.id}@${name}`,
      label: `${server.label} @ ${name}`,
    })),
  )
}

const known = new Map<string, string>()

/** Sets the checkouts whose servers `serveOneOf` starts (main.ts, from `--checkouts`). */
export function useCheckouts(checkouts: readonly Checkout[]): void {
  known.clear()
  for (const { name, root } of checkouts) known.set(name, root)
}

/**
 * The script that serves a server id and the id it is given: this checkout's `serve-one.js` for
 * a plain id, the named checkout's for `<id>@<name>`.
 *
 * @param id - a server id, with a checkout's name or without
 * @param own - this checkout's `serve-one.js`
 * @returns the script and the plain id
 * @throws Error for a checkout not set by {@link useCheckouts}
 */
export function serveOneOf(id: string, own: string): { script: string; id: string } {
  const at = id.lastIndexOf('@')
  if (at < 0) return { script: own, id }
  const name = id.slice(at + 1)
  const root = known.get(name)
  if (root === undefined) throw new Error(`server "${id}": no checkout named ${name}`)
  return { script: join(root, 'apps', 'bench', 'dist', 'serve-one.js'), id: id.slice(0, at) }
}
