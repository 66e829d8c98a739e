import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import { PassThrough, Readable } from 'node:stream';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadBucketCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  NoSuchKey,
  NoSuchUpload,
  NotFound,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
  type S3ServiceException,
} from '@aws-sdk/client-s3';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import type { ByteRange } from '../oci/byte-range.js';
import type { Digest } from '../oci/digest.js';
import { blobKey, digestOfKey, NotStoredError, ObjectTooLargeError, StoreUnavailableError, type BlobStore, type BlobWrite, type StoredEntry } from './blob-store.js';
import { UploadJournal } from './upload-journal.js';

export interface S3StoreOptions {
  bucket: string;
  /** Empty: AWS's own endpoint for the region. */
  endpoint: string;
  region: string;
  forcePathStyle: boolean;
  /** Empty: the SDK's chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, profiles, instance roles). */
  accessKeyId: string;
  secretAccessKey: string;
  /** Prepended to every key. */
  prefix: string;
  partSizeBytes: number;
  redirectExpirySeconds: number;
  /** The endpoint clients use for presigned URLs (split DNS); empty: the endpoint. */
  publicEndpoint: string;
  /** Every call: until the answer's headers, and the longest silence of a body. */
  requestTimeoutMs: number;
  /** Sockets to the gateway at once. */
  maxSockets: number;
  /** Where the uploads this instance started are noted, so a restart after a crash aborts them. */
  journalDir: string;
}

/** Uploads of any instance older than this are abandoned: no fill takes a day. */
const ABANDONED_AFTER_MS = 24 * 3_600_000;
const CONNECT_TIMEOUT_MS = 5_000;

/**
 * Objects in an S3-compatible bucket (AWS S3, Ceph RGW, MinIO) under
 * `<prefix>blobs/<alg>/<2 hex>/<hex>`. Fills are multipart uploads that
 * become visible only when completed, after the digest verified; anything
 * else (a mismatch, an upstream failure, a crash) aborts them.
 */
export class S3Store implements BlobStore {
  readonly kind = 's3';
  readonly shared = true;
  private readonly client: S3Client;
  /** Signs URLs for clients, which may reach the gateway by another name. */
  private readonly signer: S3Client;
  private readonly journal: UploadJournal;

  constructor(private readonly options: S3StoreOptions) {
    this.client = makeClient(options, options.endpoint);
    this.signer = options.publicEndpoint ? makeClient(options, options.publicEndpoint) : this.client;
    this.journal = new UploadJournal(options.journalDir);
  }

  /** Checks that the bucket answers with these credentials; the error names the key to fix. */
  async check(): Promise<void> {
    try {
      await this.client.send(new HeadBucketCommand({ Bucket: this.options.bucket }), { abortSignal: AbortSignal.timeout(this.options.requestTimeoutMs) });
    } catch (err) {
      const status = (err as S3ServiceException).$metadata?.httpStatusCode;
      const where = this.options.endpoint || `AWS S3 (${this.options.region})`;
      if (status === 404) throw new Error(`storage.s3.bucket: bucket "${this.options.bucket}" does not exist at ${where}`);
      if (status === 403 || status === 401) throw new Error(`storage.s3.accessKeyId / storage.s3.secretAccessKey: ${where} refused them for bucket "${this.options.bucket}" (${status})`);
      throw new Error(`storage.s3.endpoint: cannot reach ${where}: ${describe(err)}`);
    }
  }

  private key(digest: Digest): string {
    return `${this.options.prefix}${blobKey(digest)}`;
  }

  async stat(digest: Digest): Promise<{ size: number } | undefined> {
    try {
      const head = await this.client.send(new HeadObjectCommand({ Bucket: this.options.bucket, Key: this.key(digest) }), this.deadline());
      return { size: Number(head.ContentLength ?? 0) };
    } catch (err) {
      if (isMissing(err)) return undefined;
      throw unavailable(`HEAD ${this.key(digest)}`, err);
    }
  }

  async open(digest: Digest, range?: ByteRange): Promise<{ body: Readable; size: number }> {
    const headers = new AbortController();
    const timer = setTimeout(() => headers.abort(), this.options.requestTimeoutMs);
    try {
      const got = await this.client.send(
        new GetObjectCommand({ Bucket: this.options.bucket, Key: this.key(digest), ...(range ? { Range: `bytes=${range.start}-${range.end}` } : {}) }),
        { abortSignal: headers.signal },
      );
      const body = got.Body as Readable;
      const total = range ? Number(/\/(\d+)$/.exec(got.ContentRange ?? '')?.[1]) : Number(got.ContentLength);
      return { body, size: Number.isFinite(total) ? total : -1 };
    } catch (err) {
      if (isMissing(err)) throw new NotStoredError(digest.value, 'no such object in the bucket');
      throw unavailable(`GET ${this.key(digest)}`, err);
    } finally {
      // The deadline is for the answer's headers; a body's silence is the request handler's timeout.
      clearTimeout(timer);
    }
  }

  async read(digest: Digest, limit: number): Promise<Buffer> {
    const { body, size } = await this.open(digest);
    if (size > limit) {
      body.destroy();
      throw new ObjectTooLargeError(digest.value, size, limit);
    }
    const chunks: Buffer[] = [];
    let total = 0;
    try {
      for await (const chunk of body) {
        total += (chunk as Buffer).length;
        if (total > limit) throw new ObjectTooLargeError(digest.value, total, limit);
        chunks.push(chunk as Buffer);
      }
    } catch (err) {
      body.destroy();
      if (err instanceof ObjectTooLargeError) throw err;
      throw unavailable(`GET ${this.key(digest)}`, err);
    }
    return Buffer.concat(chunks, total);
  }

  async put(digest: Digest, bytes: Buffer): Promise<void> {
    try {
      await this.client.send(new PutObjectCommand({ Bucket: this.options.bucket, Key: this.key(digest), Body: bytes, ContentLength: bytes.length }), this.deadline());
    } catch (err) {
      throw unavailable(`PUT ${this.key(digest)}`, err);
    }
  }

  async beginWrite(digest: Digest, expectedSize?: number): Promise<BlobWrite> {
    return new S3Write(this.client, this.options, this.key(digest), this.journal, expectedSize);
  }

  async delete(digest: Digest): Promise<void> {
    try {
      await this.client.send(new DeleteObjectCommand({ Bucket: this.options.bucket, Key: this.key(digest) }), this.deadline());
    } catch (err) {
      if (!isMissing(err)) throw unavailable(`DELETE ${this.key(digest)}`, err);
    }
  }

  async *list(): AsyncIterable<StoredEntry> {
    let token: string | undefined;
    // Bounded by the bucket's listing: every page moves the continuation token on.
    for (let page = 0; page < 10_000_000; page++) {
      const listed = await this.client.send(new ListObjectsV2Command({ Bucket: this.options.bucket, Prefix: `${this.options.prefix}blobs/`, ContinuationToken: token }), this.deadline());
      for (const object of listed.Contents ?? []) {
        const key = (object.Key ?? '').slice(this.options.prefix.length);
        yield { key, digest: digestOfKey(key), size: Number(object.Size ?? 0) };
      }
      if (!listed.IsTruncated || !listed.NextContinuationToken) return;
      token = listed.NextContinuationToken;
    }
  }

  /** Aborts the uploads this instance left (noted in its journal) and any older than a day under the prefix. */
  async sweepIncomplete(): Promise<number> {
    let aborted = 0;
    const abort = async (key: string, uploadId: string): Promise<void> => {
      try {
        await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.options.bucket, Key: key, UploadId: uploadId }), this.deadline());
        aborted += 1;
      } catch (err) {
        if (!isMissing(err)) throw unavailable(`abort the upload of ${key}`, err);
      }
    };
    const noted = this.journal.entries();
    for (const { key, uploadId } of noted) await abort(key, uploadId);
    this.journal.clear();
    const seen = new Set(noted.map((n) => n.uploadId));
    let keyMarker: string | undefined;
    let uploadIdMarker: string | undefined;
    for (let page = 0; page < 100_000; page++) {
      const listed = await this.client.send(
        new ListMultipartUploadsCommand({ Bucket: this.options.bucket, Prefix: `${this.options.prefix}blobs/`, KeyMarker: keyMarker, UploadIdMarker: uploadIdMarker }),
        this.deadline(),
      );
      for (const upload of listed.Uploads ?? []) {
        const old = upload.Initiated !== undefined && Date.now() - upload.Initiated.getTime() > ABANDONED_AFTER_MS;
        if (upload.Key && upload.UploadId && old && !seen.has(upload.UploadId)) await abort(upload.Key, upload.UploadId);
      }
      if (!listed.IsTruncated) break;
      keyMarker = listed.NextKeyMarker;
      uploadIdMarker = listed.NextUploadIdMarker;
    }
    return aborted;
  }

  async abortUploads(digest: Digest): Promise<number> {
    const key = this.key(digest);
    let aborted = 0;
    try {
      const listed = await this.client.send(new ListMultipartUploadsCommand({ Bucket: this.options.bucket, Prefix: key }), this.deadline());
      for (const upload of listed.Uploads ?? []) {
        if (upload.Key !== key || !upload.UploadId) continue;
        try {
          await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.options.bucket, Key: key, UploadId: upload.UploadId }), this.deadline());
          aborted += 1;
        } catch (err) {
          if (!isMissing(err)) throw err;
        }
      }
    } catch (err) {
      throw unavailable(`abort the uploads of ${key}`, err);
    }
    return aborted;
  }

  async space(): Promise<undefined> {
    return undefined;
  }

  async presignedUrl(digest: Digest): Promise<string> {
    return getSignedUrl(this.signer, new GetObjectCommand({ Bucket: this.options.bucket, Key: this.key(digest) }), { expiresIn: this.options.redirectExpirySeconds });
  }

  async close(): Promise<void> {
    this.client.destroy();
    if (this.signer !== this.client) this.signer.destroy();
  }

  private deadline(): { abortSignal: AbortSignal } {
    return { abortSignal: AbortSignal.timeout(this.options.requestTimeoutMs) };
  }
}

/** Attempts per gathered part; a part streamed as it arrives cannot be sent again. */
const PART_ATTEMPTS = 3;

/** A part being streamed to the gateway as the fill's bytes arrive. */
interface StreamedPart {
  body: PassThrough;
  remaining: number;
  sent: Promise<void>;
}

/**
 * A fill's bytes as a multipart upload, hand-rolled because lib-storage copies
 * every part into one buffer and stops reading while a part uploads: that
 * doubled the memory of a fill and halved its speed (see `npm run bench`).
 *
 * When the size is known (the upstream's Content-Length, nearly always), every
 * part's length is known in advance, so each part streams to the gateway as
 * the bytes arrive, with the socket's backpressure, and nothing is held for it.
 * Otherwise parts are gathered from the fill's own buffers (views, never
 * copies), one in flight while the next gathers. A blob no larger than a part
 * is a single PUT, streamed the same way when its size is known, with its last
 * byte held back: nothing is visible under the key until commit() completes
 * the PUT or the upload, after the digest verified.
 */
class S3Write implements BlobWrite {
  /** Streamed parts, a streamed single PUT, or gathered bytes (size unknown). */
  private readonly mode: 'parts' | 'put' | 'gathered';
  private received = 0;
  private partsStarted = 0;
  /** Completed parts, by part number less one. */
  private readonly parts: { PartNumber: number; ETag: string }[] = [];
  private current: StreamedPart | undefined;
  /** The streamed PUT's last byte, sent by commit(): the PUT cannot complete before the digest verified. */
  private held: Buffer | undefined;
  /** The part sent last, streamed or gathered: the next one waits for it. */
  private previous: Promise<void> = Promise.resolve();
  /** Bytes not yet in a part (gathered mode and single PUTs). */
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private uploadId: Promise<string> | undefined;
  private failure: Error | undefined;
  private ended = false;
  /** Cancels every call of this upload once it is aborted. */
  private readonly cancel = new AbortController();

  constructor(
    private readonly client: S3Client,
    private readonly options: S3StoreOptions,
    private readonly key: string,
    private readonly journal: UploadJournal,
    private readonly expectedSize: number | undefined,
  ) {
    this.mode = expectedSize === undefined || expectedSize === 0 ? 'gathered' : expectedSize > options.partSizeBytes ? 'parts' : 'put';
  }

  async write(chunks: Buffer[]): Promise<void> {
    if (this.failure) throw this.failure;
    if (this.mode !== 'gathered') {
      for (const chunk of chunks) await this.stream(chunk);
    } else {
      for (const chunk of chunks) {
        this.pending.push(chunk);
        this.pendingBytes += chunk.length;
      }
      // Strictly more than a part: the last part is never empty.
      while (this.pendingBytes > this.options.partSizeBytes) {
        const part = this.take(this.options.partSizeBytes);
        await this.previous;
        if (this.failure) throw this.failure;
        this.previous = this.sendGathered(++this.partsStarted, part);
      }
    }
    if (this.failure) throw this.failure;
  }

  /** Splits a chunk at part boundaries and streams it into the parts (or the PUT) it belongs to. */
  private async stream(chunk: Buffer): Promise<void> {
    let rest = chunk;
    // Bounded: each round consumes bytes of the chunk or ends a part.
    for (let round = 0; rest.length > 0 && round < 1_000_000; round++) {
      if (this.failure) throw this.failure;
      if (this.received >= this.expectedSize!) {
        // More bytes than the upstream announced: the fill's size check refuses the blob.
        this.failure = new StoreUnavailableError(`${this.key}: more bytes than the ${this.expectedSize} announced`);
        throw this.failure;
      }
      const part = this.current ?? (await (this.mode === 'put' ? this.startPut() : this.startStreamedPart()));
      let bytes = rest.subarray(0, part.remaining);
      rest = rest.subarray(bytes.length);
      part.remaining -= bytes.length;
      this.received += bytes.length;
      if (this.mode === 'put' && part.remaining === 0) {
        this.held = bytes.subarray(bytes.length - 1);
        bytes = bytes.subarray(0, bytes.length - 1);
      }
      const open = part.body.write(bytes);
      if (part.remaining === 0 && this.mode === 'parts') {
        part.body.end();
        this.previous = part.sent;
        this.current = undefined;
      } else if (!open) {
        await drained(part.body);
      }
    }
  }

  private async startStreamedPart(): Promise<StreamedPart> {
    // One part at a time: the previous one must have been taken whole.
    await this.previous;
    if (this.failure) throw this.failure;
    const uploadId = await this.start();
    const partNumber = ++this.partsStarted;
    const length = Math.min(this.options.partSizeBytes, this.expectedSize! - this.received);
    const body = new PassThrough({ highWaterMark: 1 << 20 });
    const sent = this.uploadPart(uploadId, partNumber, length, body).catch((err: unknown) => {
      this.failure ??= unavailable(`upload part ${partNumber} of ${this.key}`, err);
      body.destroy();
    });
    this.current = { body, remaining: length, sent };
    return this.current;
  }

  /** The single PUT of a blob no larger than a part, its body streamed as the bytes arrive. */
  private startPut(): StreamedPart {
    const body = new PassThrough({ highWaterMark: 1 << 20 });
    // No overall deadline, as for parts: the handler's idle timeout cuts silence.
    const sent = this.client
      .send(new PutObjectCommand({ Bucket: this.options.bucket, Key: this.key, Body: body, ContentLength: this.expectedSize }), { abortSignal: this.cancel.signal })
      .then(() => undefined)
      .catch((err: unknown) => {
        this.failure ??= unavailable(`PUT ${this.key}`, err);
        body.destroy();
      });
    this.current = { body, remaining: this.expectedSize!, sent };
    return this.current;
  }

  /** The first `bytes` of what is pending, as views of the same buffers. */
  private take(bytes: number): Buffer[] {
    const part: Buffer[] = [];
    let taken = 0;
    while (taken < bytes) {
      const head = this.pending[0]!;
      const wanted = bytes - taken;
      if (head.length <= wanted) {
        part.push(head);
        this.pending.shift();
        taken += head.length;
      } else {
        part.push(head.subarray(0, wanted));
        this.pending[0] = head.subarray(wanted);
        taken += wanted;
      }
    }
    this.pendingBytes -= bytes;
    return part;
  }

  private start(): Promise<string> {
    this.uploadId ??= this.client
      .send(new CreateMultipartUploadCommand({ Bucket: this.options.bucket, Key: this.key }), this.deadline())
      .then((created) => {
        if (!created.UploadId) throw new Error('CreateMultipartUpload returned no UploadId');
        // Noted before any part goes out, so a crash from here on leaves nothing behind.
        this.journal.add(this.key, created.UploadId);
        return created.UploadId;
      })
      .catch((err: unknown) => {
        this.failure ??= unavailable(`start the upload of ${this.key}`, err);
        throw this.failure;
      });
    return this.uploadId;
  }

  private async uploadPart(uploadId: string, partNumber: number, length: number, body: Readable): Promise<void> {
    // No overall deadline: a part takes as long as the gateway reads it; the handler's idle timeout cuts silence.
    const sent = await this.client.send(
      new UploadPartCommand({ Bucket: this.options.bucket, Key: this.key, UploadId: uploadId, PartNumber: partNumber, ContentLength: length, Body: body }),
      { abortSignal: this.cancel.signal },
    );
    if (!sent.ETag) throw new Error(`UploadPart ${partNumber} returned no ETag`);
    this.parts[partNumber - 1] = { PartNumber: partNumber, ETag: sent.ETag };
  }

  /** Sends a gathered part, again on failure: its bytes are still at hand. */
  private async sendGathered(partNumber: number, chunks: Buffer[]): Promise<void> {
    const length = chunks.reduce((sum, c) => sum + c.length, 0);
    let last: unknown;
    try {
      const uploadId = await this.start();
      for (let round = 1; round <= PART_ATTEMPTS && !this.cancel.signal.aborted; round++) {
        try {
          return await this.uploadPart(uploadId, partNumber, length, Readable.from(chunks, { objectMode: false }));
        } catch (err) {
          last = err;
          if (isMissing(err) || round === PART_ATTEMPTS) break;
          await new Promise((resolve) => setTimeout(resolve, 100 * round));
        }
      }
    } catch (err) {
      last = err;
    }
    this.failure ??= unavailable(`upload part ${partNumber} of ${this.key}`, last ?? new Error('upload aborted'));
  }

  async commit(): Promise<void> {
    if (this.failure) throw this.failure;
    this.ended = true;
    try {
      if (this.mode === 'put') {
        const put = this.current;
        if (!put || this.received !== this.expectedSize) throw new Error(`${this.key}: ${this.received} of ${this.expectedSize} bytes written`);
        put.body.end(this.held);
        await put.sent;
        if (this.failure) throw this.failure;
        return;
      }
      if (this.mode === 'gathered' && !this.uploadId) {
        // The fill's own buffers, streamed: no copy of the blob is made for the request.
        const body = Readable.from(this.pending, { objectMode: false });
        await this.client.send(new PutObjectCommand({ Bucket: this.options.bucket, Key: this.key, Body: body, ContentLength: this.pendingBytes }), this.deadline());
        return;
      }
      if (this.current) throw new Error(`${this.key}: ${this.received} of ${this.expectedSize} bytes written`);
      if (this.mode === 'gathered') {
        const last = this.take(this.pendingBytes);
        await this.previous;
        if (this.failure) throw this.failure;
        this.previous = this.sendGathered(++this.partsStarted, last);
      }
      await this.previous;
      if (this.failure) throw this.failure;
      const uploadId = await this.start();
      await this.client.send(
        new CompleteMultipartUploadCommand({ Bucket: this.options.bucket, Key: this.key, UploadId: uploadId, MultipartUpload: { Parts: this.parts } }),
        this.deadline(),
      );
      this.journal.remove(this.key, uploadId);
    } catch (err) {
      const failure = this.failure ?? unavailable(`upload of ${this.key}`, err);
      await this.dropUpload();
      throw failure;
    } finally {
      this.pending = [];
    }
  }

  async abort(): Promise<void> {
    if (this.ended && !this.failure) return;
    this.ended = true;
    this.pending = [];
    this.cancel.abort();
    this.current?.body.destroy();
    await this.previous;
    await this.current?.sent;
    await this.dropUpload();
  }

  /** Aborts the multipart upload, if one was created; a failure here is left to the start-up sweep. */
  private async dropUpload(): Promise<void> {
    const uploadId = await this.uploadId?.catch(() => undefined);
    if (!uploadId) return;
    try {
      // Not this upload's own deadline: its cancel signal may have fired.
      await this.client.send(new AbortMultipartUploadCommand({ Bucket: this.options.bucket, Key: this.key, UploadId: uploadId }), { abortSignal: AbortSignal.timeout(this.options.requestTimeoutMs) });
      this.journal.remove(this.key, uploadId);
    } catch (err) {
      if (isMissing(err)) this.journal.remove(this.key, uploadId);
    }
  }

  private deadline(): { abortSignal: AbortSignal } {
    return { abortSignal: AbortSignal.any([this.cancel.signal, AbortSignal.timeout(this.options.requestTimeoutMs)]) };
  }

  async close(): Promise<void> {
    // Nothing to read back: readers the memory window left behind read the completed object.
  }
}

/** Resolves when the stream takes more bytes, or when it closed (a failed part). */
function drained(stream: PassThrough): Promise<void> {
  return new Promise((resolve) => {
    if (stream.destroyed) return resolve();
    const done = (): void => {
      stream.off('drain', done);
      stream.off('close', done);
      resolve();
    };
    stream.once('drain', done);
    stream.once('close', done);
  });
}

function makeClient(options: S3StoreOptions, endpoint: string): S3Client {
  const agent = { keepAlive: true, maxSockets: options.maxSockets };
  return new S3Client({
    region: options.region,
    ...(endpoint ? { endpoint } : {}),
    forcePathStyle: options.forcePathStyle,
    ...(options.accessKeyId ? { credentials: { accessKeyId: options.accessKeyId, secretAccessKey: options.secretAccessKey } } : {}),
    requestHandler: new NodeHttpHandler({
      connectionTimeout: CONNECT_TIMEOUT_MS,
      requestTimeout: options.requestTimeoutMs,
      httpAgent: new HttpAgent(agent),
      httpsAgent: new HttpsAgent(agent),
    }),
    // Streaming checksums (the SDK's default since 2025) are refused by RGW and other gateways.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    maxAttempts: 3,
  });
}

function isMissing(err: unknown): boolean {
  return err instanceof NoSuchKey || err instanceof NotFound || err instanceof NoSuchUpload || (err as S3ServiceException).$metadata?.httpStatusCode === 404;
}

function describe(err: unknown): string {
  const e = err as S3ServiceException & { code?: string };
  const status = e.$metadata?.httpStatusCode;
  return [e.name, e.code, status ? `HTTP ${status}` : undefined, e.message].filter(Boolean).join(' ');
}

function unavailable(what: string, err: unknown): StoreUnavailableError {
  return err instanceof StoreUnavailableError ? err : new StoreUnavailableError(`${what}: ${describe(err)}`, { cause: err });
}
