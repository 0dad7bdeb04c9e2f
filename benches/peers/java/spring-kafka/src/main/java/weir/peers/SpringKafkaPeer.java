package weir.peers;

import java.util.HashMap;
import java.util.Map;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.springframework.context.annotation.AnnotationConfigApplicationContext;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;
import org.springframework.kafka.annotation.EnableKafka;
import org.springframework.kafka.annotation.EnableKafkaRetryTopic;
import org.springframework.kafka.annotation.KafkaListener;
import org.springframework.kafka.config.ConcurrentKafkaListenerContainerFactory;
import org.springframework.kafka.core.ConsumerFactory;
import org.springframework.kafka.core.DefaultKafkaConsumerFactory;
import org.springframework.kafka.core.DefaultKafkaProducerFactory;
import org.springframework.kafka.core.KafkaAdmin;
import org.springframework.kafka.core.KafkaTemplate;
import org.springframework.kafka.core.ProducerFactory;
import org.springframework.kafka.retrytopic.RetryTopicConfiguration;
import org.springframework.kafka.retrytopic.RetryTopicConfigurationBuilder;
import org.springframework.scheduling.TaskScheduler;
import org.springframework.scheduling.concurrent.ThreadPoolTaskScheduler;

/**
 * Spring for Apache Kafka 4.0 as a peer: a {@code @KafkaListener} method on a
 * {@code ConcurrentKafkaListenerContainerFactory} with concurrency = the
 * topic's partitions (WEIR_BENCH_PARTITIONS), Spring's default acknowledgement
 * ({@code BATCH}: the offsets of each poll are committed once its records are
 * processed). Plain Spring configuration, the same container Spring Boot
 * builds. In the retry scenario ({@link RetryConfig}) Spring's non-blocking
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

    /** Spring's non-blocking retries (retry topics), for the retry scenario. */
    @Configuration
    @EnableKafkaRetryTopic
    public static class RetryConfig {
        @Bean
        public ProducerFactory<byte[], byte[]> producerFactory() {
            Map<String, Object> props = new HashMap<>();
            props.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, P.bootstrap);
            return new DefaultKafkaProducerFactory<>(
                props, new ByteArraySerializer(), new ByteArraySerializer());
        }

        @Bean
        public KafkaTemplate<byte[], byte[]> kafkaTemplate(ProducerFactory<byte[], byte[]> pf) {
            return new KafkaTemplate<>(pf);
        }

        @Bean
        public KafkaAdmin kafkaAdmin() {
            return new KafkaAdmin(Map.of(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, P.bootstrap));
        }

        @Bean
        public TaskScheduler taskScheduler() {
            return new ThreadPoolTaskScheduler();
        }

        @Bean
        public RetryTopicConfiguration retryTopics(KafkaTemplate<byte[], byte[]> template) {
            return RetryTopicConfigurationBuilder.newInstance()
                .fixedBackOff(P.retryMs)
                .maxAttempts(2)
                .includeTopic(P.topic)
                .retryTopicSuffix("-retry-" + P.group)
                .dltSuffix("-dlt-" + P.group)
                .autoCreateTopics(true, P.partitions, (short) 1)
                .create(template);
        }
    }

    public static void main(String[] args) throws Exception {
        var ctx = P.retries
            ? new AnnotationConfigApplicationContext(SpringKafkaPeer.class, RetryConfig.class)
            : new AnnotationConfigApplicationContext(SpringKafkaPeer.class);
        P.reportWhenDone();
        ctx.close();
        System.exit(0);
    }
}
