import type { Socket } from 'node:net';

export interface ConnectionLimits {
  /** Open connections across all listeners; more are answered 429 and closed. */
  maxConnections: number;
  /** Open connections from one client address; more are answered 429 and closed. */
  maxConnectionsPerClient: number;
  /** A connection whose queued response bytes make no progress for this long is cut (a reader with a zero window). */
  sendTimeoutMs: number;
}

export type Admission = 'ok' | 'server-full' | 'client-full';

interface SendProgress {
  bytes: number;
  since: number;
}

/**
 * Counts the process's client connections, in total and per address, from
 * the moment the TCP connection is accepted (a TLS handshake in progress
 * counts too), and cuts connections whose writes stopped moving, so that one
 * client cannot hold what the others need.
 */
export class ConnectionGuard {
  open = 0;
  private readonly byAddress = new Map<string, number>();
  private readonly sockets = new Map<Socket, SendProgress>();
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly limits: ConnectionLimits,
    private readonly onStalled: (address: string, queuedBytes: number) => void = () => undefined,
  ) {}

  /** Counts a newly accepted TCP connection until it closes. */
  track(socket: Socket): void {
    const address = socket.remoteAddress ?? '';
    this.open += 1;
    this.byAddress.set(address, (this.byAddress.get(address) ?? 0) + 1);
    this.sockets.set(socket, { bytes: 0, since: Date.now() });
    socket.once('close', () => {
      this.open -= 1;
      const left = (this.byAddress.get(address) ?? 1) - 1;
      if (left <= 0) this.byAddress.delete(address);
      else this.byAddress.set(address, left);
      this.sockets.delete(socket);
      if (this.sockets.size === 0) this.stopChecking();
    });
    this.startChecking();
  }

  /** Whether a tracked connection from `address` is within the limits, as things stand now. */
  admission(address: string | undefined): Admission {
    if (this.open > this.limits.maxConnections) return 'server-full';
    if (this.limits.maxConnectionsPerClient > 0 && (this.byAddress.get(address ?? '') ?? 0) > this.limits.maxConnectionsPerClient) return 'client-full';
    return 'ok';
  }

  /** One pass over the connections: those whose queued bytes did not move for sendTimeout are destroyed. */
  runOnce(now = Date.now()): void {
    for (const [socket, progress] of this.sockets) {
      if (socket.writableLength === 0 || socket.bytesWritten !== progress.bytes) {
        progress.bytes = socket.bytesWritten;
        progress.since = now;
        continue;
      }
      if (now - progress.since >= this.limits.sendTimeoutMs) {
        this.onStalled(socket.remoteAddress ?? '', socket.writableLength);
        socket.destroy();
      }
    }
  }

  private startChecking(): void {
    if (this.timer || this.limits.sendTimeoutMs <= 0) return;
    const every = Math.max(100, Math.min(1_000, this.limits.sendTimeoutMs / 4));
    this.timer = setInterval(() => this.runOnce(), every);
    this.timer.unref();
  }

  private stopChecking(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }
}
