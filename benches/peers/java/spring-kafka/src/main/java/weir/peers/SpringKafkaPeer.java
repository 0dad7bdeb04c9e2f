package weir.peers;

import java.util.HashMap;
import java.util.Map;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.springframework.context.annotation.AnnotationConfigApplicationContext;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;
import org.springframework.kafka.annotation.EnableKafka;
import org.springframework.kafka.annotation.KafkaListener;
import org.springframework.kafka.config.ConcurrentKafkaListenerContainerFactory;
import org.springframework.kafka.core.ConsumerFactory;
import org.springframework.kafka.core.DefaultKafkaConsumerFactory;

/**
 * Spring for Apache Kafka 4.0 as a peer: a {@code @KafkaListener} method on a
 * {@code ConcurrentKafkaListenerContainerFactory} with concurrency = the
 * topic's partitions (WEIR_BENCH_PARTITIONS), Spring's default acknowledgement
 * ({@code BATCH}: the offsets of each poll are committed once its records are
 * processed). Plain Spring configuration, the same container Spring Boot
 * builds. In the retry scenario ({@link SpringKafkaRetryConfig}) Spring's non-blocking
 * retries take over: a {@code RetryTopicConfiguration} with one retry topic
 * and a fixed back-off of WEIR_BENCH_RETRY_MS ({@code maxAttempts(2)}), what
 * {@code @RetryableTopic(attempts = "2", backoff = @Backoff(1000))} declares;
 * the retry and DLT topics carry the group's name so that rounds do not read
 * each other's.
 */
@Configuration
@EnableKafka
public class SpringKafkaPeer {
    static final Protocol P = new Protocol();

    @Bean
    public ConsumerFactory<byte[], byte[]> consumerFactory() {
        Map<String, Object> props = new HashMap<>();
        props.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, P.bootstrap);
        props.put(ConsumerConfig.GROUP_ID_CONFIG, P.group);
        props.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        return new DefaultKafkaConsumerFactory<>(
            props, new ByteArrayDeserializer(), new ByteArrayDeserializer());
    }

    @Bean
    public ConcurrentKafkaListenerContainerFactory<byte[], byte[]> kafkaListenerContainerFactory(
            ConsumerFactory<byte[], byte[]> consumerFactory) {
        var factory = new ConcurrentKafkaListenerContainerFactory<byte[], byte[]>();
        factory.setConsumerFactory(consumerFactory);
        factory.setConcurrency(P.partitions);
        return factory;
    }

    @KafkaListener(topics = "#{systemEnvironment['WEIR_BENCH_TOPIC']}")
    public void listen(ConsumerRecord<byte[], byte[]> record) throws InterruptedException {
        P.handle(record.partition(), record.value());
    }

    public static void main(String[] args) throws Exception {
        var ctx = P.retries
            ? new AnnotationConfigApplicationContext(SpringKafkaPeer.class, SpringKafkaRetryConfig.class)
            : new AnnotationConfigApplicationContext(SpringKafkaPeer.class);
        P.reportWhenDone();
        ctx.close();
        System.exit(0);
    }
}
