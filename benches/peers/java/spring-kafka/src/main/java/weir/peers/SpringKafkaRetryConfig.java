package weir.peers;

import java.util.Map;
import java.util.HashMap;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;
import org.springframework.kafka.annotation.EnableKafkaRetryTopic;
import org.springframework.kafka.core.DefaultKafkaProducerFactory;
import org.springframework.kafka.core.KafkaAdmin;
import org.springframework.kafka.core.KafkaTemplate;
import org.springframework.kafka.core.ProducerFactory;
import org.springframework.kafka.retrytopic.RetryTopicConfiguration;
import org.springframework.kafka.retrytopic.RetryTopicConfigurationBuilder;
import org.springframework.scheduling.TaskScheduler;
import org.springframework.scheduling.concurrent.ThreadPoolTaskScheduler;

/**
 * Spring's non-blocking retries (retry topics), for the retry scenario only.
 * A top-level class on purpose: Spring processes a configuration class's
 * nested configuration classes with it, so as a nested class of
 * {@link SpringKafkaPeer} it was loaded in every scenario and refused the
 * zero back-off of the others ("Interval should be >= 1").
 */
@Configuration
@EnableKafkaRetryTopic
public class SpringKafkaRetryConfig {
    @Bean
    public ProducerFactory<byte[], byte[]> producerFactory() {
        Map<String, Object> props = new HashMap<>();
        props.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, SpringKafkaPeer.P.bootstrap);
        return new DefaultKafkaProducerFactory<>(
            props, new ByteArraySerializer(), new ByteArraySerializer());
    }

    @Bean
    public KafkaTemplate<byte[], byte[]> kafkaTemplate(ProducerFactory<byte[], byte[]> pf) {
        return new KafkaTemplate<>(pf);
    }

    @Bean
    public KafkaAdmin kafkaAdmin() {
        return new KafkaAdmin(Map.of(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, SpringKafkaPeer.P.bootstrap));
    }

    @Bean
    public TaskScheduler taskScheduler() {
        return new ThreadPoolTaskScheduler();
    }

    @Bean
    public RetryTopicConfiguration retryTopics(KafkaTemplate<byte[], byte[]> template) {
        return RetryTopicConfigurationBuilder.newInstance()
            .fixedBackOff(SpringKafkaPeer.P.retryMs)
            .maxAttempts(2)
            .includeTopic(SpringKafkaPeer.P.topic)
            .retryTopicSuffix("-retry-" + SpringKafkaPeer.P.group)
            .dltSuffix("-dlt-" + SpringKafkaPeer.P.group)
            .autoCreateTopics(true, SpringKafkaPeer.P.partitions, (short) 1)
            .create(template);
    }
}
