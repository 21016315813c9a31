import java.io.FileReader;
import java.io.Reader;
import java.util.Collection;
import java.util.Properties;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.DescribeClusterOptions;
import org.apache.kafka.clients.admin.ListTopicsOptions;
import org.apache.kafka.common.Node;

/**
 * Readiness probe used by tools/kafka/broker (only kafka-clients on the classpath).
 *
 * Usage: KafkaReady BOOTSTRAP TIMEOUT_SECONDS [PID]
 *
 * With KAFKA_READY_CONFIG=FILE, the client properties in FILE are added (security.protocol,
 * sasl.*, ssl.*): the probe then also proves that a secured listener authenticates.
 *
 * Repeats a DescribeCluster + ListTopics (both are Metadata round trips) until
 * one succeeds and reports at least one broker and a controller. Exit codes:
 * 0 ready, 2 not ready before the deadline, 3 the process PID has exited.
 * One JVM covers the whole wait, so the JVM start is paid only once.
 */
public class KafkaReady {
    public static void main(String[] args) throws Exception {
        String bootstrap = args[0];
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(Long.parseLong(args[1]));
        ProcessHandle watched = args.length > 2
                ? ProcessHandle.of(Long.parseLong(args[2])).orElse(null) : null;
        if (args.length > 2 && watched == null) System.exit(3);

        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("client.id", "kafka-ready-probe");
        p.put("request.timeout.ms", "2000");
        p.put("default.api.timeout.ms", "3000");
        p.put("socket.connection.setup.timeout.ms", "1000");
        p.put("socket.connection.setup.timeout.max.ms", "2000");
        p.put("reconnect.backoff.ms", "100");
        p.put("reconnect.backoff.max.ms", "500");
        p.put("retry.backoff.ms", "100");
        p.put("retry.backoff.max.ms", "500");
        String extra = System.getenv("KAFKA_READY_CONFIG");
        if (extra != null && !extra.isEmpty()) {
            try (Reader r = new FileReader(extra)) {
                p.load(r);
            }
        }
        String last = "no attempt";
        try (Admin admin = Admin.create(p)) {
            while (true) {
                if (watched != null && !watched.isAlive()) {
                    System.err.println("kafka-ready: broker process " + args[2] + " exited");
                    System.exit(3);
                }
                long left = TimeUnit.NANOSECONDS.toMillis(deadline - System.nanoTime());
                if (left <= 0) break;
                int t = (int) Math.max(200, Math.min(left, 3000));
                try {
                    var cluster = admin.describeCluster(new DescribeClusterOptions().timeoutMs(t));
                    Collection<Node> nodes = cluster.nodes().get(t, TimeUnit.MILLISECONDS);
                    Node controller = cluster.controller().get(t, TimeUnit.MILLISECONDS);
                    admin.listTopics(new ListTopicsOptions().listInternal(true).timeoutMs(t))
                            .names().get(t, TimeUnit.MILLISECONDS);
                    if (!nodes.isEmpty() && controller != null && !controller.isEmpty()) {
                        System.out.println("ready: brokers=" + nodes.size() + " controller=" + controller.id());
                        System.exit(0);
                    }
                    last = "metadata without brokers/controller";
                } catch (Exception e) {
                    last = e.toString();
                }
                Thread.sleep(200);
            }
        }
        System.err.println("kafka-ready: " + bootstrap + " not ready: " + last);
        System.exit(2);
    }
}
