/**
 * The guest agent's Call makes its AbortController only when a handler asks
 * for `signal` (under TCG one costs ~0.3 ms): the abort must look the same
 * whichever comes first.
 */
import { describe, expect, it } from 'vitest';
import { Call, RemoteError, type AgentSession } from '../../guest-agent/src/session.ts';
import { UNANNOUNCED_LIMITS } from '../../src/protocol/index.ts';

// A Call reads no more of its session than the host's limits, when it opens a stream.
const call = () => new Call({ hostLimits: UNANNOUNCED_LIMITS } as unknown as AgentSession, 1, 'exec');

describe('Call', () => {
  it('aborted before anyone asked for its signal: the signal comes aborted, with the reason', () => {
    const c = call();
    const why = new RemoteError('ECANCELLED', 'cancelled by the host');
    expect(c.abortReason).toBeUndefined();
    c.abort(why);
    expect(c.abortReason).toBe(why);
    expect(c.signal.aborted).toBe(true);
    expect(c.signal.reason).toBe(why);
  });

  it('a signal asked for first hears the abort, once, with the first reason', () => {
    const c = call();
    const heard: unknown[] = [];
    c.signal.addEventListener('abort', () => heard.push(c.signal.reason));
    const first = new RemoteError('ECANCELLED', 'first');
    c.abort(first);
    c.abort(new RemoteError('ECANCELLED', 'second'));
    expect(heard).toEqual([first]);
    expect(c.abortReason).toBe(first);
  });

  it('a stream opened after the abort is closed at once', async () => {
    const c = call();
    const why = new RemoteError('ECANCELLED', 'session ended');
    c.abort(why);
    const credit = c.creditFor('stdout');
    await expect(credit.take(1)).rejects.toBe(why);
  });
});
