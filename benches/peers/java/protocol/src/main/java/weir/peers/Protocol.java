package weir.peers;

import com.sun.management.OperatingSystemMXBean;
import java.io.IOException;
import java.lang.management.ManagementFactory;
import java.util.concurrent.atomic.AtomicLong;

/**
 * The protocol every peer of {@code weir-bench peers} follows: the scenario
 * comes in {@code WEIR_BENCH_*} variables; once {@code WEIR_BENCH_MESSAGES}
 * messages are processed the peer prints one JSON line and waits for stdin to
 * close, so the harness can read its CPU time and peak RSS from /proc.
 */
public final class Protocol {
    public final String bootstrap = env("WEIR_BENCH_BOOTSTRAP");
    public final String group = env("WEIR_BENCH_GROUP");
    public final String topic = env("WEIR_BENCH_TOPIC");
    public final long messages = Long.parseLong(env("WEIR_BENCH_MESSAGES"));
    public final boolean tuned = System.getenv("WEIR_BENCH_TUNED") != null;

    private final AtomicLong count = new AtomicLong();
    private volatile long firstNanos;
    private volatile long lastNanos;
    private volatile double cpuBeforeFirst;

    private static String env(String k) {
        String v = System.getenv(k);
        if (v == null) {
            throw new IllegalStateException(k + " not set");
        }
        return v;
    }

    private static double processCpuSeconds() {
        var os = (OperatingSystemMXBean) ManagementFactory.getOperatingSystemMXBean();
        return os.getProcessCpuTime() / 1e9;
    }

    /** Counts one processed message (any thread). */
    public void processed() {
        long k = count.incrementAndGet();
        if (k == 1) {
            cpuBeforeFirst = processCpuSeconds();
            firstNanos = System.nanoTime();
        }
        if (k == messages) {
            lastNanos = System.nanoTime();
        }
    }

    /** Waits until every message is processed, reports, and waits for stdin to close. */
    public void reportWhenDone() throws InterruptedException, IOException {
        long deadline = System.nanoTime() + 600_000_000_000L;
        while (count.get() < messages || lastNanos == 0) {
            if (System.nanoTime() > deadline) {
                System.err.println("peer: " + count.get() + " of " + messages + " in 600 s");
                System.exit(1);
            }
            Thread.sleep(5);
        }
        System.out.printf(
            "{\"first_to_last_s\": %.6f, \"cpu_s_before_first\": %.3f, \"processed\": %d}%n",
            (lastNanos - firstNanos) / 1e9, cpuBeforeFirst, count.get());
        System.out.flush();
        while (System.in.read() != -1) {
            // until the harness closes stdin
        }
    }
}
