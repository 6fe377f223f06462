#!/usr/bin/env node
/** @module @wsgiproxy/cli: the `wsgiproxy` command. */
import { runCli } from './lib/cli.ts'

// Exit as soon as the command is done: a server has drained and its backends are gone by then.
process.exit(await runCli(process.argv.slice(2)))
