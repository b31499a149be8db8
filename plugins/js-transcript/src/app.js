// js-transcript: an example Ferry transformer plugin in JavaScript (world `finished-transformer`).
//
// After every turn it POSTs a JSON transcript record of the turn to a collector. The collector's URL is the
// endpoint's transformer setting `collector_url` (see README.md); the host must allow that host for the
// endpoint, or the request is denied.
//
// Bindings as componentize-js maps them: records are objects with camelCase fields, `option<string>` is a
// string or `undefined`, enums are their WIT names as strings ("completed", "flow-failed"), and
// `result<_, string>` is "return normally" (ok) or "throw a string" (err). Async exports are
// allowed: the component runs its event loop until the returned promise settles.

import { log } from 'ferry:transformer/log@0.1.0';

const DEFAULT_COLLECTOR_URL = 'http://127.0.0.1:9999/transcripts';

// Parses a JSON string handed over by the host; keeps the raw string if it is not valid JSON.
function parseJson(text) {
  if (text === undefined || text === null) return null;
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

// The collector URL from the endpoint's settings: settings.transformer.settings.collector_url.
function collectorUrl(settingsJson) {
  let settings;
  try {
    settings = JSON.parse(settingsJson);
  } catch {
    settings = undefined;
  }
  const url = settings?.transformer?.settings?.collector_url;
  if (typeof url === 'string' && url.trim() !== '') return url.trim();
  return DEFAULT_COLLECTOR_URL;
}

// The transcript record of one turn.
function transcript(summary) {
  return {
    recordedAt: new Date().toISOString(),
    endpoint: {
      id: summary.endpoint.id,
      channel: summary.endpoint.channel,
      pageId: summary.endpoint.pageId,
    },
    userId: summary.userId,
    sessionId: summary.sessionId,
    outcome: summary.outcome,
    input: { text: summary.input.text ?? null },
    outputs: summary.outputs.map((o) => ({ text: o.text ?? null, data: parseJson(o.data) })),
    sent: summary.sent.map((s) => ({ message: parseJson(s.message), messageId: s.messageId ?? null })),
  };
}

// POSTs the transcript of the turn; throws a message (a string) when it cannot be delivered.
async function deliver(summary) {
  const url = collectorUrl(summary.endpoint.settings);
  const record = transcript(summary);
  let response;
  try {
    response = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(record),
    });
  } catch (e) {
    throw `transcript not delivered: POST ${url} failed: ${e?.message ?? e}`;
  }
  if (!response.ok) {
    let body = '';
    try {
      body = (await response.text()).slice(0, 200);
    } catch {
      // the status alone is enough
    }
    throw `transcript not delivered: collector ${url} answered ${response.status}${body ? `: ${body}` : ''}`;
  }
  log('info', `transcript of the turn (${record.outcome}, ${record.sent.length} sent) delivered to ${url}`);
}

export const executionFinished = {
  async handleExecutionFinished(summary) {
    try {
      await deliver(summary);
    } catch (e) {
      // The err case of `result<_, string>` must be thrown as a string: componentize-js 0.23 traps on
      // anything else ("expected a string, received [object]"), which loses the message.
      throw typeof e === 'string' ? e : `js-transcript failed: ${e?.message ?? e}`;
    }
  },
};
