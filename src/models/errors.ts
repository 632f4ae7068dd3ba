// Every way a pull can fail, each with its own exit code (`infera pull` exits with it) and a message
// that says what to do. The admin API sends the same code and message in its SSE `error` event.

export const PULL_EXIT_CODES = {
  /** The ref itself cannot be read (bad syntax, unknown preset). */
  bad_ref: 2,
  /** The repo (or the file or folder in it) does not exist on the hub: HTTP 404. */
  not_found: 10,
  /** The repo is gated or private: 401/403. */
  unauthorized: 11,
  /** No GGUF file in the repo carries the quantisation asked for. */
  no_such_quant: 12,
  /** A downloaded file's sha256 differs from the hub's; the file was removed. */
  checksum_mismatch: 13,
  /** The models directory's disk has too little free space for the download. */
  disk_full: 14,
  /** The hub could not be reached at all. */
  network: 15,
  /** The hub answered with something else (5xx, a malformed listing). */
  hub_error: 16,
} as const;

export type PullErrorCode = keyof typeof PULL_EXIT_CODES;

export class PullError extends Error {
  override name = 'PullError';
  constructor(
    readonly code: PullErrorCode,
    message: string,
  ) {
    super(message);
  }
  get exitCode(): number {
    return PULL_EXIT_CODES[this.code];
  }
}
