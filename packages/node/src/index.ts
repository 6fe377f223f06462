/** @module @wsgiproxy/node: wsgiproxy on Node (undici transport, node:http fast path, spawner). */

// The Node entry is filled by the transport, listener and spawner work (see README "Status").
// oxlint-disable-next-line unicorn/require-module-specifiers -- an empty entry until its API lands
export {}
