import { createHash, type Hash } from 'node:crypto';
import { digestInvalid } from './errors.js';

/** Algorithms we can verify; the spec's grammar allows others, which we refuse. */
const HEX_LENGTH = { sha256: 64, sha512: 128 } as const;
export type DigestAlgorithm = keyof typeof HEX_LENGTH;

export interface Digest {
  readonly algorithm: DigestAlgorithm;
  readonly hex: string;
  /** `algorithm:hex`, the canonical string form. */
  readonly value: string;
}

const DIGEST_GRAMMAR = /^([a-z0-9]+(?:[+._-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)$/;

/** Parses and validates a digest string; throws DIGEST_INVALID with the reason. */
export function parseDigest(input: string): Digest {
  const match = DIGEST_GRAMMAR.exec(input);
  if (!match) throw digestInvalid(`malformed digest: ${truncate(input)}`);
  const algorithm = match[1]!;
  const hex = match[2]!;
  if (!(algorithm in HEX_LENGTH)) throw digestInvalid(`unsupported digest algorithm: ${truncate(algorithm)}`);
  const alg = algorithm as DigestAlgorithm;
  if (hex.length !== HEX_LENGTH[alg] || !/^[a-f0-9]+$/.test(hex)) {
    throw digestInvalid(`${alg} digest must be ${HEX_LENGTH[alg]} lowercase hex characters`);
  }
  return { algorithm: alg, hex, value: `${alg}:${hex}` };
}

export function isDigestLike(reference: string): boolean {
  return reference.includes(':');
}

export function createDigester(algorithm: DigestAlgorithm): Hash {
  return createHash(algorithm);
}

export function digestOf(bytes: Uint8Array, algorithm: DigestAlgorithm = 'sha256'): string {
  return `${algorithm}:${createHash(algorithm).update(bytes).digest('hex')}`;
}

export function truncate(text: string, max = 80): string {
  return text.length > max ? `${text.slice(0, max)}…` : text;
}
