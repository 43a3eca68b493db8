// BullMQ's submitting and observing side of W1 and W3, run by bench/bullmq.py.
//
//   node bench/bullmq_producer.mjs PORT QUEUE WORKLOAD JOBS [COUNT]
//
// WORKLOAD `w1`: JOBS `progress` jobs of COUNT updates each, observed through QueueEvents
// (BullMQ's way to follow jobs); `w3`: JOBS `noop` jobs, until every completion is observed.
// Prints one JSON line: elapsed ms from the first add to the last observation, the progress
// events observed and their emit->observe latencies, completions, job ids, and this
// process's own CPU time (it has exited when the driver could read /proc).
// bullmq and ioredis live in bench/.node, which bench/bullmq.py installs (npm install --prefix).
import { createRequire } from "node:module";

const require = createRequire(new URL("./.node/", import.meta.url));
const { Queue, QueueEvents } = require("bullmq");
const IORedis = require("ioredis");

const [port, name, workload, jobsArg, countArg] = process.argv.slice(2);
const jobs = Number(jobsArg);
const count = Number(countArg || 0);
const connection = new IORedis({ port: Number(port), maxRetriesPerRequest: null });
const queue = new Queue(name, { connection });
await queue.waitUntilReady();
// QueueEvents reads from "$" by default, and its first read may come after the first jobs
// have finished: start it from the events stream's last entry instead, so it misses nothing.
const newest = await connection.xrevrange(`bull:${name}:events`, "+", "-", "COUNT", 1);
const lastEventId = newest.length ? newest[0][0] : "0-0";
const events = new QueueEvents(name, { connection: { port: Number(port) }, lastEventId });
await events.waitUntilReady();

const cpuStart = process.cpuUsage();
const latencies = [];
let completed = 0;
let progress = 0;
let last = 0;
const done = new Promise((resolve) => {
  events.on("progress", ({ data }) => {
    const now = Date.now();
    progress += 1;
    last = now;
    if (data && data.at) latencies.push(now - data.at);
  });
  events.on("completed", () => {
    completed += 1;
    last = Date.now();
    if (completed === jobs) resolve();
  });
});

const start = Date.now();
const ids = [];
const adds = [];
for (let n = 0; n < jobs; n++) {
  adds.push(
    workload === "w1"
      ? queue.add("progress", { count })
      : queue.add("noop", {}),
  );
}
for (const job of await Promise.all(adds)) ids.push(job.id);
await done;
const cpu = process.cpuUsage(cpuStart);
console.log(JSON.stringify({
  elapsed_ms: last - start, progress, completed, latencies, ids, cpu_s: (cpu.user + cpu.system) / 1e6,
}));
await events.close();
await queue.close();
await connection.quit();
process.exit(0);
