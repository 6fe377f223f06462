// The command's OpenTelemetry SDK: with `tracing` in the config (or an OTLP endpoint in the
// standard environment variables) spans go to an OTLP/HTTP collector; without it nothing is
// loaded and the libraries' tracing stays off (docs/operations.md, "Tracing").
import type { Logger } from './log.ts'

/** The `tracing` settings, resolved. */
export interface TracingSettings {
  /** The OTLP/HTTP traces endpoint; `undefined`: the exporter reads `OTEL_EXPORTER_OTLP_*`. */
  otlp: string | undefined
  /** `service.name` of the spans. */
  serviceName: string
  /** The share of new traces recorded, 0 to 1 (a sampled parent is always followed). */
  sampleRatio: number
  /** Peers whose `traceparent` continues their trace (serve's `trustTraceparent`). */
  trustTraceparent: readonly string[]
}

/** The SDK while it runs. */
export interface Tracing {
  /** Sends the spans still buffered and stops the SDK. Never throws. */
  shutdown(): Promise<void>
}

/** Default `service.name`. */
export const DEFAULT_SERVICE_NAME = 'wsgiproxy'

/**
 * The tracing settings from the config's `tracing` and the environment: `undefined` (tracing
 * off) without either.
 *
 * @param input - the config's `tracing`, if any
 * @param env - the environment
 * @returns the settings, or `undefined`
 */
export function tracingSettings(
  input:
    | {
        otlp?: string | undefined
        serviceName?: string | undefined
        sampleRatio?: number | undefined
        trustTraceparent?: string[] | undefined
      }
    | undefined,
  env: NodeJS.ProcessEnv = process.env,
): TracingSettings | undefined {
  const fromEnv =
    nonEmpty(env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) ?? nonEmpty(env.OTEL_EXPORTER_OTLP_ENDPOINT)
  if (input === undefined && fromEnv === undefined) return undefined
  return {
    otlp: input?.otlp,
    serviceName: input?.serviceName ?? nonEmpty(env.OTEL_SERVICE_NAME) ?? DEFAULT_SERVICE_NAME,
    sampleRatio: input?.sampleRatio ?? 1,
    trustTraceparent: input?.trustTraceparent ?? [],
  }
}

/**
 * Registers the OpenTelemetry SDK for this process: a batching OTLP/HTTP (JSON) exporter, W3C
 * trace context, a parent-based ratio sampler, an async-local context so log lines know their
 * request's trace, and the SDK's own warnings in the command's log.
 *
 * @param settings - what to export where
 * @param logger - where the SDK's warnings go
 * @returns the running SDK
 */
export async function startTracing(settings: TracingSettings, logger: Logger): Promise<Tracing> {
  const [api, base, exporter, contextManager, core, resources] = await Promise.all([
    import('@opentelemetry/api'),
    import('@opentelemetry/sdk-trace-base'),
    import('@opentelemetry/exporter-trace-otlp-http'),
    import('@opentelemetry/context-async-hooks'),
    import('@opentelemetry/core'),
    import('@opentelemetry/resources'),
  ])
  api.diag.setLogger(
    {
      error: (message) => logger.error(`tracing: ${message}`),
      warn: (message) => logger.event('warning', `tracing: ${message}`),
      info: () => {},
      debug: () => {},
      verbose: () => {},
    },
    api.DiagLogLevel.WARN,
  )
  const provider = new base.BasicTracerProvider({
    resource: resources.resourceFromAttributes({ 'service.name': settings.serviceName }),
    sampler: new base.ParentBasedSampler({
      root: new base.TraceIdRatioBasedSampler(settings.sampleRatio),
    }),
    spanProcessors: [
      new base.BatchSpanProcessor(
        new exporter.OTLPTraceExporter(settings.otlp === undefined ? {} : { url: settings.otlp }),
      ),
    ],
  })
  api.context.setGlobalContextManager(new contextManager.AsyncLocalStorageContextManager().enable())
  api.propagation.setGlobalPropagator(new core.W3CTraceContextPropagator())
  api.trace.setGlobalTracerProvider(provider)
  return {
    shutdown: async () => {
      try {
        await provider.shutdown()
      } catch (error) {
        logger.error(`tracing: the last spans could not be sent: ${messageOf(error)}`)
      }
    },
  }
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value === '' ? undefined : value
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error)
}
