// The TypeScript side of tests/ofrep/agreement.py: OpenFeature's server SDK
// (@openfeature/server-sdk) with the OFREP provider
// (@openfeature/ofrep-provider), evaluating object flags against expd.
//
// Usage: node agreement.mjs JOB.json
//   JOB.json: {"baseUrl": "http://127.0.0.1:8080", "token": "...",
//              "codeDefault": {...}, "concurrency": 32,
//              "evaluations": [{"key": "reco_ymal_v1",
//                               "context": {"targetingKey": "u-1", "placement": "..."}}, ...]}
//
// Prints one JSON line per evaluation, in the job's order:
//   {"index", "key", "user", "variant", "value", "reason", "errorCode", "errorMessage"}
// ("user" is the context's targetingKey, else its session_id), then one
// closing line {"done": N, "seconds": S, "logged": {...}}: the evaluations'
// wall time, and what the SDK logged (counted; the first message of each
// level kept).
//
// The packages are resolved from the node_modules next to this file (the
// driver runs a copy of it in a directory whose node_modules is the CI's
// install).
import { readFileSync } from 'node:fs';
import { OpenFeature } from '@openfeature/server-sdk';
import { OFREPProvider } from '@openfeature/ofrep-provider';

const job = JSON.parse(readFileSync(process.argv[2], 'utf8'));

const logged = {};
const note = (level) => (...args) => {
  const entry = (logged[level] ??= { count: 0, first: null });
  entry.count += 1;
  if (entry.first === null) entry.first = args.map((a) => (a instanceof Error ? a.message : String(a))).join(' ');
};
OpenFeature.setLogger({ error: note('error'), warn: note('warn'), info: note('info'), debug: () => {} });

await OpenFeature.setProviderAndWait(
  new OFREPProvider({
    baseUrl: job.baseUrl,
    headers: [['Authorization', `Bearer ${job.token}`]],
  }),
);
const client = OpenFeature.getClient('ofrep-agreement');

const results = new Array(job.evaluations.length);
let next = 0;
const started = process.hrtime.bigint();

async function lane() {
  while (next < job.evaluations.length) {
    const index = next++;
    const { key, context } = job.evaluations[index];
    const details = await client.getObjectDetails(key, job.codeDefault, context);
    results[index] = {
      index,
      key,
      user: context.targetingKey ?? context.session_id,
      variant: details.variant ?? null,
      value: details.value ?? null,
      reason: details.reason ?? null,
      errorCode: details.errorCode ?? null,
      errorMessage: details.errorMessage ?? null,
    };
  }
}

await Promise.all(Array.from({ length: job.concurrency ?? 32 }, lane));
const seconds = Number(process.hrtime.bigint() - started) / 1e9;

const lines = results.map((result) => JSON.stringify(result));
lines.push(JSON.stringify({ done: results.length, seconds, logged }));
process.stdout.write(lines.join('\n') + '\n');
await OpenFeature.close();
