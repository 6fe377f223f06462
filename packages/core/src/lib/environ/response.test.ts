import * as fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import type { AppResponse } from '@wsgiproxy/core'
import { fromResponse, toResponse } from '@wsgiproxy/core'
import { readText, settle, trackedBody } from '@wsgiproxy/test-kit/bodies'

describe('toResponse', () => {
  it('builds status, reason phrase, headers and a streamed body', async () => {
    const response = toResponse({
      status: 201,
      statusText: 'Created',
      headers: [
        ['content-type', 'text/plain'],
        ['x-a', '1'],
      ],
      body: trackedBody('he', 'llo').body,
    })
    expect(response.status).toBe(201)
    expect(response.statusText).toBe('Created')
    expect(response.headers.get('content-type')).toBe('text/plain')
    expect(response.headers.get('x-a')).toBe('1')
    expect(await response.text()).toBe('hello')
  })

  it('keeps two Set-Cookie lines separate', () => {
    const response = toResponse({
      status: 200,
      headers: [
        ['set-cookie', 'a=1; Path=/; Expires=Wed, 21 Oct 2037 07:28:00 GMT'],
        ['Set-Cookie', 'b=2'],
      ],
      body: null,
    })
    expect(response.headers.getSetCookie()).toEqual([
      'a=1; Path=/; Expires=Wed, 21 Oct 2037 07:28:00 GMT',
      'b=2',
    ])
  })

  it('keeps a custom reason phrase', () => {
    const response = toResponse({ status: 299, statusText: 'Mostly OK', headers: [], body: null })
    expect([response.status, response.statusText]).toEqual([299, 'Mostly OK'])
  })

  it.each(['bad\r\nphrase', 'euro €', 'nul\u0000'])(
    'keeps the status and drops an invalid reason phrase %j without throwing',
    async (statusText) => {
      const response = toResponse({
        status: 418,
        statusText,
        headers: [],
        body: trackedBody('tea').body,
      })
      expect(response.status).toBe(418)
      expect(response.statusText).toBe('')
      expect(await response.text()).toBe('tea')
    },
  )

  it.each([100, 101, 103, 199, 600, 999, 1000, 200.5, Number.NaN])(
    'answers status %d with a 502 problem+json response',
    async (status) => {
      const response = toResponse({ status, headers: [], body: null })
      expect(response.status).toBe(502)
      expect(response.headers.get('content-type')).toBe('application/problem+json')
      const problem = (await response.json()) as Record<string, unknown>
      expect(problem).toMatchObject({ status: 502, code: 'UPSTREAM_INVALID_RESPONSE' })
      expect(problem['detail']).toContain(String(status))
    },
  )

  it('releases the body of a status it cannot represent', async () => {
    const { body, released } = trackedBody('x')
    toResponse({ status: 600, headers: [], body })
    await settle()
    expect(released()).toBe(true)
  })

  it.each([204, 205, 304])('drops and releases the body of a %d response', async (status) => {
    const { body, released } = trackedBody('x')
    const response = toResponse({ status, headers: [['etag', '"v1"']], body })
    expect(response.status).toBe(status)
    expect(response.body).toBeNull()
    expect(response.headers.get('etag')).toBe('"v1"')
    await settle()
    expect(released()).toBe(true)
  })

  it('answers an invalid header line with a 502 problem+json response and releases the body', async () => {
    const { body, released } = trackedBody('x')
    const response = toResponse({ status: 200, headers: [['bad name', 'v']], body })
    expect(response.status).toBe(502)
    expect(response.headers.get('content-type')).toBe('application/problem+json')
    await settle()
    expect(released()).toBe(true)
  })

  it('builds a response without a body from a null body', () => {
    expect(toResponse({ status: 200, headers: [], body: null }).body).toBeNull()
  })

  it('passes a ReadableStream body through', async () => {
    const stream = new Response('streamed').body
    const response = toResponse({ status: 200, headers: [], body: stream })
    expect(await response.text()).toBe('streamed')
  })
})

describe('fromResponse', () => {
  it('reads status, reason phrase, headers and the body stream', async () => {
    const record = fromResponse(
      new Response('hello', {
        status: 202,
        statusText: 'Accepted Later',
        headers: { 'content-type': 'text/plain', 'x-a': '1' },
      }),
    )
    expect(record.status).toBe(202)
    expect(record.statusText).toBe('Accepted Later')
    expect(record.headers).toEqual([
      ['content-type', 'text/plain'],
      ['x-a', '1'],
    ])
    expect(await readText(record.body)).toBe('hello')
  })

  it('keeps several Set-Cookie lines separate', () => {
    const headers = new Headers()
    headers.append('set-cookie', 'a=1; Path=/')
    headers.append('set-cookie', 'b=2')
    const record = fromResponse(new Response(null, { headers }))
    expect(record.headers.filter(([name]) => name === 'set-cookie')).toEqual([
      ['set-cookie', 'a=1; Path=/'],
      ['set-cookie', 'b=2'],
    ])
  })

  it('leaves statusText out when the response has none', () => {
    const record = fromResponse(new Response(null, { status: 200 }))
    expect(record).not.toHaveProperty('statusText')
  })

  it('gives a null body for a response without one', () => {
    expect(fromResponse(new Response(null, { status: 204 })).body).toBeNull()
  })
})

describe('toResponse(fromResponse(response))', () => {
  it('keeps status, reason phrase, Set-Cookie lines, headers and body', async () => {
    const headers = new Headers([
      ['content-type', 'text/plain'],
      ['set-cookie', 'a=1'],
      ['set-cookie', 'b=2'],
    ])
    const copy = toResponse(
      fromResponse(new Response('body', { status: 404, statusText: 'Nope', headers })),
    )
    expect([copy.status, copy.statusText]).toEqual([404, 'Nope'])
    expect([...copy.headers]).toEqual([...headers])
    expect(copy.headers.getSetCookie()).toEqual(['a=1', 'b=2'])
    expect(await copy.text()).toBe('body')
  })
})

describe('fromResponse(toResponse(appResponse))', () => {
  it('keeps status, reason phrase, header lines and body for any response (property)', async () => {
    const token = fc.stringMatching(/^[a-z0-9!#$%&'*+.^`|~-]{1,12}$/)
    const value = fc.stringMatching(/^[\x21-\x7e](?:[\x20-\x7e]{0,20}[\x21-\x7e])?$/)
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 200, max: 599 }).filter((s) => s !== 204 && s !== 205 && s !== 304),
        fc.option(fc.stringMatching(/^[\x21-\x7e](?:[\x20-\x7e]{0,20}[\x21-\x7e])?$/), {
          nil: undefined,
        }),
        fc.array(fc.tuple(fc.oneof(token, fc.constant('set-cookie')), value), { maxLength: 8 }),
        fc.array(fc.string(), { maxLength: 4 }),
        async (status, statusText, headers, chunks) => {
          const appResponse: AppResponse = {
            status,
            headers,
            body: trackedBody(...chunks).body,
          }
          if (statusText !== undefined) appResponse.statusText = statusText
          const copy = fromResponse(toResponse(appResponse))
          expect(copy.status).toBe(status)
          expect(copy.statusText).toBe(statusText)
          expect(copy.headers).toEqual([...new Headers(headers)])
          expect(copy.headers.filter(([name]) => name === 'set-cookie')).toEqual(
            headers.filter(([name]) => name === 'set-cookie'),
          )
          expect(await readText(copy.body)).toBe(chunks.join(''))
        },
      ),
    )
  })
})
