package weir.peers;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.lang.management.ManagementFactory;
import java.nio.charset.StandardCharsets;

/**
 * Apache Kafka's own consumer benchmark as a baseline of {@code weir-bench
 * peers}: {@code org.apache.kafka.tools.ConsumerPerformance} (what
 * {@code kafka-consumer-perf-test.sh} runs) from kafka-tools 4.1.2, run
 * in-process with the scenario's topic, group and message count. Its
 * {@code fetch.time.ms} (consumption after the group join) becomes
 * {@code first_to_last_s}; the JSON line and the wait for stdin follow the
 * peers' protocol ({@link Protocol}). It has no handler, so it runs the
 * {@code noop} scenario only.
 */
public final class ConsumerPerfPeer {
    private static String env(String k) {
        String v = System.getenv(k);
        if (v == null) {
            throw new IllegalStateException(k + " not set");
        }
        return v;
    }

    public static void main(String[] args) throws Exception {
        var os = (com.sun.management.OperatingSystemMXBean) ManagementFactory.getOperatingSystemMXBean();
        double cpuBefore = os.getProcessCpuTime() / 1e9;
        PrintStream out = System.out;
        var captured = new ByteArrayOutputStream();
        System.setOut(new PrintStream(captured, true, StandardCharsets.UTF_8));
        try {
            org.apache.kafka.tools.ConsumerPerformance.main(new String[] {
                "--bootstrap-server", env("WEIR_BENCH_BOOTSTRAP"),
                "--topic", env("WEIR_BENCH_TOPIC"),
                "--group", env("WEIR_BENCH_GROUP"),
                "--messages", env("WEIR_BENCH_MESSAGES"),
                "--timeout", "60000",
                "--hide-header",
            });
        } finally {
            System.setOut(out);
        }
        // One CSV line: start.time, end.time, data.consumed.in.MB, MB.sec,
        // data.consumed.in.nMsg, nMsg.sec, rebalance.time.ms, fetch.time.ms,
        // fetch.MB.sec, fetch.nMsg.sec.
        String last = null;
        for (String line : captured.toString(StandardCharsets.UTF_8).split("\n")) {
            if (line.split(",").length >= 10) {
                last = line;
            }
        }
        if (last == null) {
            System.err.println("ConsumerPerformance printed no result: " + captured);
            System.exit(1);
        }
        String[] f = last.split(",");
        long messages = Long.parseLong(f[4].trim());
        double fetchMs = Double.parseDouble(f[7].trim());
        System.out.printf(
            "{\"first_to_last_s\": %.6f, \"cpu_s_before_first\": %.3f, \"processed\": %d,"
                + " \"order_violations\": 0, \"time_boxed\": false, \"consumer_performance\": \"%s\"}%n",
            fetchMs / 1000.0, cpuBefore, messages, last.trim());
        System.out.flush();
        while (System.in.read() != -1) {
            // until the harness closes stdin
        }
        System.exit(0);
    }
}
