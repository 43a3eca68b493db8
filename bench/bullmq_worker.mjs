// BullMQ's side of W1 and W3: one Worker process, run by bench/bullmq.py.
//
//   node bench/bullmq_worker.mjs PORT QUEUE CONCURRENCY
//
// Job names match bench/kinds.py: `noop` returns at once; `progress` reports
// data.count progress updates (each carrying its emit time, `at`, for the latency).
// Prints "ready" once it consumes the queue; SIGTERM closes it.
// bullmq and ioredis live in bench/.node, which bench/bullmq.py installs (npm install --prefix).
import { createRequire } from "node:module";

const require = createRequire(new URL("./.node/", import.meta.url));
const { Worker } = require("bullmq");
const IORedis = require("ioredis");

const [port, queue, concurrency] = process.argv.slice(2);
const connection = new IORedis({ port: Number(port), maxRetriesPerRequest: null });

const worker = new Worker(
  queue,
  async (job) => {
    if (job.name === "progress") {
      const count = job.data.count;
      for (let step = 1; step <= count; step++) {
        await job.updateProgress({
          progress: step / (count + 1), current: step, total: count, message: `step ${step}/${count}`, at: Date.now(),
        });
      }
      return { count };
    }
    return {};
  },
  { connection, concurrency: Number(concurrency) },
);

await worker.waitUntilReady();
console.log("ready");
process.on("SIGTERM", async () => {
  setTimeout(() => process.exit(1), 5000).unref(); // close() waits on Redis, which may be gone
  await worker.close();
  await connection.quit();
  process.exit(0);
});
