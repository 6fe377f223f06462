/** @module @wsgiproxy/hono: thin Hono adapters for wsgiproxy. */
export type { MountOptions } from './lib/mount.ts'
export { mount } from './lib/mount.ts'
export type { ProxyOptions } from './lib/proxy.ts'
export { proxy } from './lib/proxy.ts'
export type { GetRemoteAddr } from './lib/remote-addr.ts'
export type { WsgiProxyOptions, WsgiProxyVariables } from './lib/wsgi-proxy.ts'
export { wsgiProxy } from './lib/wsgi-proxy.ts'
