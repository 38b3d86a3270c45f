/**
 * Server-sent event streams as the model and the kernel view use them: a
 * browser's `EventSource`, or a test's stand-in.
 */

/**
 * The part of `EventSource` the front end uses (a browser's, or a test's).
 */
export interface IEventSourceLike {
  addEventListener(
    type: string,
    listener: (event: { data?: string }) => void
  ): void;
  close(): void;
  /**
   * `2` (`EventSource.CLOSED`) once the stream has failed for good: the
   * browser does not reconnect after an HTTP error such as a 404.
   */
  readonly readyState?: number;
}

/**
 * `EventSource.CLOSED`: the stream will not reconnect.
 */
export const STREAM_CLOSED = 2;

/**
 * Open a stream with the browser's `EventSource`, sending the page's
 * cookies.
 */
export function openEventSource(url: string): IEventSourceLike {
  return new EventSource(url, { withCredentials: true });
}
