/** @module @wsgiproxy/hono: thin Hono adapters for wsgiproxy. */

// The Hono adapters (`mount`, `proxy`, `wsgiProxy`) arrive with the adapters work (see README "Status").
// oxlint-disable-next-line unicorn/require-module-specifiers -- an empty entry until its API lands
export {}
