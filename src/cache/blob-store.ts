import type { Digest } from '../oci/digest.js';
import type { BlobFill } from './blob-fill.js';

import type { ByteRange } from '../oci/byte-range.js';

export type { ByteRange };

/**
 * Where blob bytes live. The filesystem is the embedded implementation; an
 * object store can implement the same seam. Metadata lives in the index, not here.
 */
export interface BlobStore {
  readSmall(digest: Digest, limit?: number): Promise<Buffer>;
  /** Stores small verified content (manifests) durably. */
  writeSmall(digest: Digest, bytes: Buffer): Promise<void>;
  /** Starts writing a blob to temporary space; it becomes visible on commit. */
  beginFill(digest: Digest, expectedSize?: number): Promise<BlobFill>;
  remove(digest: Digest): Promise<void>;
  /** Removes temp files left by a crash; returns how many. */
  sweepTemp(): Promise<number>;
}
