// Test helpers: the RFC 9421 test vectors' shared setup.

/** Standard base64 text as bytes. */
export function fromBase64(text: string): Uint8Array {
  return Uint8Array.from(atob(text), (c) => c.charCodeAt(0))
}

/** RFC 9421 Appendix B.1.5: the shared secret "test-shared-secret" (64 bytes). */
export const RFC_SECRET: Uint8Array = fromBase64(
  'uzvJfB4u3N0Jy4T7NZ75MDVcr8zSTInedJtkgcu46YW4XByzNJjxBdtjUkdJPBtbmHhIDi6pcl8jsasjlTMtDQ==',
)
