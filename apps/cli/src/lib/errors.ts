/** Exit status of a usage error: a bad flag, argument, config file or key file. */
export const EXIT_USAGE = 1
/** Exit status of a runtime error: the address is in use, a server failed. */
export const EXIT_RUNTIME = 2

/**
 * An error the command reports as one line and exits with: `exitCode` 1 for usage (the user's
 * input is wrong), 2 for runtime (the environment failed).
 */
export class CliError extends Error {
  override name: string = 'CliError'
  /** The process exit status. */
  readonly exitCode: number

  /**
   * @param message - one line: what is wrong and how to fix it
   * @param exitCode - {@link EXIT_USAGE} or {@link EXIT_RUNTIME}
   * @param options - the cause
   */
  constructor(message: string, exitCode: number = EXIT_USAGE, options?: ErrorOptions) {
    super(message, options)
    this.exitCode = exitCode
  }
}

/**
 * A usage error.
 *
 * @param message - what is wrong and how to fix it
 * @returns the error, exit status 1
 */
export function usageError(message: string): CliError {
  return new CliError(message, EXIT_USAGE)
}
