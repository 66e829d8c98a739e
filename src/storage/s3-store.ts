import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import { PassThrough, type Readable } from 'node:stream';
import {
  AbortMultipartUploadCommand,
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
  type S3ServiceException,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
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
    // Every multipart upload is noted the moment the gateway creates it, so a crash at any point leaves none behind.
    this.client.middlewareStack.add(
      (next, context) => async (args) => {
        const result = await next(args);
        const output = result.output as { Key?: string; UploadId?: string };
        if (context.commandName === 'CreateMultipartUploadCommand' && output.Key && output.UploadId) this.journal.add(output.Key, output.UploadId);
        return result;
      },
      { step: 'initialize', name: 'stevedoreUploadJournal' },
    );
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

  async beginWrite(digest: Digest): Promise<BlobWrite> {
    return new S3Write(this.client, this.options, this.key(digest), this.journal);
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

/**
 * A multipart upload (lib-storage): bytes go out in parts of partSize, at
 * most one part in flight besides the one being filled, so memory stays
 * within about twice partSize. The upload is completed only when commit()
 * ends its input, after the digest verified.
 */
class S3Write implements BlobWrite {
  private readonly input = new PassThrough({ highWaterMark: 1 << 20 });
  private readonly upload: Upload;
  private readonly finished: Promise<unknown>;
  private failure: Error | undefined;
  private ended = false;

  constructor(
    private readonly client: S3Client,
    private readonly options: S3StoreOptions,
    private readonly key: string,
    private readonly journal: UploadJournal,
  ) {
    this.upload = new Upload({ client, params: { Bucket: options.bucket, Key: key, Body: this.input }, partSize: options.partSizeBytes, queueSize: 1, leavePartsOnError: false });
    this.finished = this.upload.done();
    this.finished.catch((err: unknown) => {
      this.failure = unavailable(`upload of ${key}`, err);
      this.input.destroy();
    });
  }

  async write(chunks: Buffer[]): Promise<void> {
    for (const chunk of chunks) {
      if (this.failure) throw this.failure;
      if (!this.input.write(chunk)) await this.drained();
    }
    if (this.failure) throw this.failure;
  }

  private drained(): Promise<void> {
    return new Promise((resolve) => {
      // A failed upload destroyed the input already: its 'close' has passed.
      if (this.failure || this.input.destroyed) return resolve();
      const done = (): void => {
        this.input.off('drain', done);
        this.input.off('close', done);
        resolve();
      };
      this.input.once('drain', done);
      this.input.once('close', done);
    });
  }

  async commit(): Promise<void> {
    if (this.failure) throw this.failure;
    this.ended = true;
    this.input.end();
    try {
      await this.finished;
    } catch (err) {
      throw this.failure ?? unavailable(`upload of ${this.key}`, err);
    } finally {
      this.forget();
    }
  }

  async abort(): Promise<void> {
    if (this.ended && !this.failure) return;
    this.ended = true;
    this.input.destroy();
    await this.upload.abort().catch(() => undefined);
    await this.finished.catch(() => undefined);
    // lib-storage aborts the multipart upload it created; make sure of it when it had an id.
    const uploadId = this.upload.uploadId;
    if (uploadId) {
      await this.client
        .send(new AbortMultipartUploadCommand({ Bucket: this.options.bucket, Key: this.key, UploadId: uploadId }), { abortSignal: AbortSignal.timeout(this.options.requestTimeoutMs) })
        .catch(() => undefined);
    }
    this.forget();
  }

  /** The upload is over: completed or aborted, it is no longer the journal's. */
  private forget(): void {
    const uploadId = this.upload.uploadId;
    if (uploadId) this.journal.remove(this.key, uploadId);
  }

  async close(): Promise<void> {
    // Nothing to read back: readers the memory window left behind read the completed object.
  }
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
