package weir.peers;

import io.confluent.parallelconsumer.PCRetriableException;
import io.confluent.parallelconsumer.ParallelConsumerOptions;
import io.confluent.parallelconsumer.ParallelConsumerOptions.CommitMode;
import io.confluent.parallelconsumer.ParallelConsumerOptions.ProcessingOrder;
import io.confluent.parallelconsumer.ParallelStreamProcessor;
import java.time.Duration;
import java.util.List;
import java.util.Properties;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

/**
 * Confluent Parallel Consumer 0.5.3.3 as a peer: per-key ordering
 * ({@code ProcessingOrder.KEY}), {@code maxConcurrency} = WEIR_BENCH_CONCURRENCY
 * (Weir's default in-flight limit), asynchronous periodic commits every 500 ms.
 * In the retry scenario a failed first attempt is retried by Parallel
 * Consumer itself after {@code defaultMessageRetryDelay} = WEIR_BENCH_RETRY_MS
 * (in memory, non-blocking: other keys go on; it throws
 * {@code PCRetriableException}, which Parallel Consumer does not log as an
 * error).
 */
public final class ParallelConsumerPeer {
    public static void main(String[] args) throws Exception {
        Protocol p = new Protocol();
        Properties props = new Properties();
        props.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, p.bootstrap);
        props.put(ConsumerConfig.GROUP_ID_CONFIG, p.group);
        props.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        // Parallel Consumer requires auto commit off; it commits itself.
        props.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
        KafkaConsumer<byte[], byte[]> consumer =
            new KafkaConsumer<>(props, new ByteArrayDeserializer(), new ByteArrayDeserializer());
        int concurrency = p.concurrency;
        var options = ParallelConsumerOptions.<byte[], byte[]>builder()
            .consumer(consumer)
            .ordering(ProcessingOrder.KEY)
            .maxConcurrency(concurrency)
            .commitMode(CommitMode.PERIODIC_CONSUMER_ASYNCHRONOUS)
            .commitInterval(Duration.ofMillis(500))
            .defaultMessageRetryDelay(Duration.ofMillis(p.retryMs))
            .build();
        ParallelStreamProcessor<byte[], byte[]> pc =
            ParallelStreamProcessor.createEosStreamProcessor(options);
        pc.subscribe(List.of(p.topic));
        pc.poll(ctx -> {
            ctx.forEach(r -> {
                try {
                    p.handle(r.partition(), r.value());
                } catch (Protocol.RetryMe e) {
                    throw new PCRetriableException(e.getMessage());
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    throw new IllegalStateException(e);
                }
            });
        });
        p.reportWhenDone();
        pc.closeDontDrainFirst();
        System.exit(0);
    }
}
