/** An inclusive byte range of a blob, as in an HTTP Range request. */
export interface ByteRange {
  start: number;
  end: number;
}
