package weir.peers;

import com.sun.management.OperatingSystemMXBean;
import java.io.IOException;
import java.lang.management.ManagementFactory;
import java.nio.charset.StandardCharsets;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicLongArray;

/**
 * The protocol every peer of {@code weir-bench peers} follows: the scenario
 * comes in {@code WEIR_BENCH_*} variables; once {@code WEIR_BENCH_MESSAGES}
 * messages are counted (or {@code WEIR_BENCH_TIME_BOX_S} seconds after the
 * first) the peer prints one JSON line and waits for stdin to close, so the
 * harness can read its CPU time and peak RSS from /proc.
 *
 * <p>The handler's rules are the same in every system
 * ({@code benches/src/scenarios/peers.rs}, {@code Work}): a message on
 * {@code WEIR_BENCH_SLOW_PARTITION} waits {@code WEIR_BENCH_SLOW_MS} and is
 * not counted, any other waits {@code WEIR_BENCH_DELAY_MS}; with
 * {@code WEIR_BENCH_CHECK_ORDER=1}, record {@code j} (its payload starts with
 * {@code j}) has key {@code j % keys} and must start only after record
 * {@code j - keys} of the same key has finished, and no later one. With
 * {@code WEIR_BENCH_FAIL_EVERY=k}, record {@code j} with {@code j % k == 0}
 * fails its first attempt ({@link #handle} throws {@link RetryMe}) and is
 * counted apart: the time from its failure to its second attempt is its
 * retry delay, reported as p50/p99 once all {@code WEIR_BENCH_RETRIED} have
 * come back.
 */
public final class Protocol {
    public final String bootstrap = env("WEIR_BENCH_BOOTSTRAP");
    public final String group = env("WEIR_BENCH_GROUP");
    public final String topic = env("WEIR_BENCH_TOPIC");
    public final long messages = Long.parseLong(env("WEIR_BENCH_MESSAGES"));
    public final boolean tuned = System.getenv("WEIR_BENCH_TUNED") != null;
    public final int partitions = (int) num("WEIR_BENCH_PARTITIONS", 12);
    public final int concurrency = (int) num("WEIR_BENCH_CONCURRENCY", 1024);
    private final long keys = Math.max(1, num("WEIR_BENCH_KEYS", 1));
    private final long delayMs = num("WEIR_BENCH_DELAY_MS", 0);
    private final int slowPartition = (int) num("WEIR_BENCH_SLOW_PARTITION", -1);
    private final long slowMs = num("WEIR_BENCH_SLOW_MS", 0);
    private final boolean checkOrder = num("WEIR_BENCH_CHECK_ORDER", 0) == 1;
    private final long timeBoxNanos = num("WEIR_BENCH_TIME_BOX_S", 600) * 1_000_000_000L;
    private final long failEvery = num("WEIR_BENCH_FAIL_EVERY", 0);
    /** The retry delay the scenario asks for (ms). */
    public final long retryMs = num("WEIR_BENCH_RETRY_MS", 1000);
    private final long retriedTarget = num("WEIR_BENCH_RETRIED", 0);
    private final java.util.concurrent.ConcurrentHashMap<Long, Long> firstFailure =
        new java.util.concurrent.ConcurrentHashMap<>();
    private final java.util.concurrent.ConcurrentLinkedQueue<Double> retryDelaysMs =
        new java.util.concurrent.ConcurrentLinkedQueue<>();
    private final AtomicLong retryDone = new AtomicLong();
    /** Whether this scenario fails messages for a retry. */
    public final boolean retries = failEvery > 0;

    /** A first attempt's failure: the framework should retry it after {@link #retryMs}. */
    public static final class RetryMe extends RuntimeException {
        RetryMe() {
            super("first attempt fails (weir-bench retry scenario)", null, false, false);
        }
    }

    private final AtomicLong count = new AtomicLong();
    /** Set as the first message's handler starts (any partition). */
    private final java.util.concurrent.atomic.AtomicBoolean started =
        new java.util.concurrent.atomic.AtomicBoolean();
    private final AtomicLong violations = new AtomicLong();
    private final AtomicLongArray done;
    private volatile long firstNanos;
    private volatile long lastNanos;
    private volatile double cpuBeforeFirst;

    public Protocol() {
        done = new AtomicLongArray(checkOrder ? (int) keys : 0);
        for (int i = 0; i < done.length(); i++) {
            done.set(i, -1);
        }
    }

    private static String env(String k) {
        String v = System.getenv(k);
        if (v == null) {
            throw new IllegalStateException(k + " not set");
        }
        return v;
    }

    private static long num(String k, long dflt) {
        String v = System.getenv(k);
        return v == null ? dflt : Long.parseLong(v);
    }

    private static double processCpuSeconds() {
        var os = (OperatingSystemMXBean) ManagementFactory.getOperatingSystemMXBean();
        return os.getProcessCpuTime() / 1e9;
    }

    /**
     * Handles one message the scenario's way on the calling thread: checks
     * per-key order, waits (a blocking sleep: these frameworks run handlers on
     * their own threads), counts.
     */
    public void handle(int partition, byte[] payload) throws InterruptedException {
        long seq = begin(payload);
        if (failEvery > 0 && seq >= 0 && seq % failEvery == 0) {
            long now = System.nanoTime();
            Long failed = firstFailure.putIfAbsent(seq, now);
            if (failed == null) {
                throw new RetryMe();
            }
            retryDelaysMs.add((now - failed) / 1e6);
            retryDone.incrementAndGet();
            return;
        }
        long wait = partition == slowPartition ? slowMs : delayMs;
        if (wait > 0) {
            Thread.sleep(wait);
        }
        end(partition, seq);
    }

    private long begin(byte[] payload) {
        if (firstNanos == 0 && started.compareAndSet(false, true)) {
            cpuBeforeFirst = processCpuSeconds();
            firstNanos = System.nanoTime();
        }
        if (!checkOrder && failEvery == 0) {
            return -1;
        }
        long seq = -1;
        if (payload != null) {
            int sp = 0;
            while (sp < payload.length && payload[sp] != ' ') {
                sp++;
            }
            try {
                seq = Long.parseLong(new String(payload, 0, sp, StandardCharsets.US_ASCII));
            } catch (NumberFormatException e) {
                seq = -1;
            }
        }
        if (seq < 0) {
            violations.incrementAndGet();
            return -1;
        }
        if (!checkOrder) {
            return seq;
        }
        long expected = seq >= keys ? seq - keys : -1;
        if (done.get((int) (seq % keys)) != expected) {
            violations.incrementAndGet();
        }
        return seq;
    }

    private void end(int partition, long seq) {
        if (seq >= 0 && checkOrder) {
            done.set((int) (seq % keys), seq);
        }
        if (partition == slowPartition) {
            return;
        }
        long k = count.incrementAndGet();
        if (k == messages) {
            lastNanos = System.nanoTime();
        }
    }

    private static double quantile(double[] sorted, double q) {
        if (sorted.length == 0) {
            return 0;
        }
        int i = (int) Math.min(sorted.length - 1, Math.floor(q * sorted.length));
        return sorted[i];
    }

    /** Waits until every message is counted or the time box is over, reports, and waits for stdin to close. */
    public void reportWhenDone() throws InterruptedException, IOException {
        long deadline = System.nanoTime() + 600_000_000_000L;
        double secs;
        long processed;
        boolean boxed;
        while (true) {
            if (lastNanos != 0 && retryDone.get() >= retriedTarget) {
                secs = (lastNanos - firstNanos) / 1e9;
                processed = messages;
                boxed = false;
                break;
            }
            if (firstNanos != 0 && System.nanoTime() - firstNanos >= timeBoxNanos) {
                secs = (System.nanoTime() - firstNanos) / 1e9;
                processed = count.get();
                boxed = true;
                break;
            }
            if (System.nanoTime() > deadline) {
                System.err.println("peer: " + count.get() + " of " + messages + " in 600 s");
                System.exit(1);
            }
            Thread.sleep(5);
        }
        double[] d = retryDelaysMs.stream().mapToDouble(Double::doubleValue).sorted().toArray();
        System.out.printf(
            "{\"first_to_last_s\": %.6f, \"cpu_s_before_first\": %.3f, \"processed\": %d,"
                + " \"order_violations\": %d, \"time_boxed\": %b, \"retried\": %d,"
                + " \"retry_delay_ms_p50\": %.3f, \"retry_delay_ms_p99\": %.3f}%n",
            secs, cpuBeforeFirst, processed, violations.get(), boxed, d.length,
            quantile(d, 0.5), quantile(d, 0.99));
        System.out.flush();
        while (System.in.read() != -1) {
            // until the harness closes stdin
        }
    }
}
