/**
 * A signal that aborts when `signal` does or `ms` have passed. Not
 * `AbortSignal.any([signal, AbortSignal.timeout(ms)])`: on Node 20 nothing
 * holds a timeout signal strongly once `any` has followed it, so a garbage
 * collection before the deadline removes it and the combined signal never
 * aborts (nodejs/node#57736). Here the timer holds its controller. Call
 * `clear()` when the work ends first.
 */
export function withDeadline(signal: AbortSignal, ms: number, reason: () => Error): { signal: AbortSignal; clear: () => void } {
  const deadline = new AbortController();
  const timer = setTimeout(() => deadline.abort(reason()), ms);
  return { signal: AbortSignal.any([signal, deadline.signal]), clear: () => clearTimeout(timer) };
}
