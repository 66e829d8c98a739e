/** One endpoint as the dashboard, /api/notifications and the metrics see it. */
export interface EndpointStatus {
  name: string;
  /** The URL without credentials or query. */
  url: string;
  /** idle: nothing to send; sending: a batch is on its way; retrying: the last attempt failed; disabled: configured off. */
  state: 'idle' | 'sending' | 'retrying' | 'disabled';
  /** Events in the outbox for this endpoint, waiting for a 2xx. */
  pending: number;
  /** Since this process started. */
  delivered: number;
  /** Delivery attempts that failed (timeout, refused, non-2xx), since this process started. */
  failedAttempts: number;
  /** Events dropped because the outbox for this endpoint was full, since this process started. */
  dropped: number;
  consecutiveFailures: number;
  /** Milliseconds since the epoch. */
  lastSuccessAt?: number;
  lastFailure?: { at: number; message: string };
  /** While retrying: when the next attempt is due. */
  nextAttemptAt?: number;
}

export interface NotificationsStatus {
  /** Events recorded since this process started (before filtering per endpoint). */
  recorded: number;
  /** Events that never reached the outbox (it could not be written for long, or at stop): 0 unless the disk failed. */
  lost: number;
  endpoints: EndpointStatus[];
}
