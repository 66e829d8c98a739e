import type { BlobStore } from './blob-store.js';
import { FsStore, type CacheModes } from './fs-store.js';
import type { S3StoreOptions } from './s3-store.js';

export type StoreOptions = { driver: 'filesystem'; dir: string; modes: CacheModes } | ({ driver: 's3' } & S3StoreOptions);

/** Opens the store the config names, ready to use: a bucket is checked first, and its leftovers from a crash cleaned up by the owner. */
export async function openStore(options: StoreOptions): Promise<BlobStore> {
  if (options.driver === 'filesystem') {
    const store = new FsStore(options.dir, options.modes);
    await store.init();
    return store;
  }
  // Loaded only for a bucket: the AWS SDK is tens of MiB of a process that never uses it otherwise.
  const { S3Store } = await import('./s3-store.js');
  const store = new S3Store(options);
  try {
    await store.check();
  } catch (err) {
    await store.close();
    throw err;
  }
  return store;
}
