// A transactional producer for tests: Kafka's own Java client writes
// committed and aborted transactions (and their control records), which
// kafka-go cannot. Run as a single-file source program:
//
//	java -cp 'libs/*' TxProducer.java BOOTSTRAP TOPIC PREFIX OP...
//
// Each OP is kind:count, kind one of plain (non-transactional records),
// commit (a committed transaction) or abort (an aborted one); hold:count:FILE
// writes a transaction, creates FILE.ready, and commits once FILE exists (a
// transaction left open while a test looks). Record i has
// key k<i%3>, the header Idempotency-Key PREFIX-<i> and the value kind.
import java.nio.charset.StandardCharsets;
import java.util.Properties;

import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public class TxProducer {
	public static void main(String[] args) {
		try {
			run(args);
		} catch (Throwable e) {
			// Printed here: the source launcher trims the stack trace of an
			// exception it catches, and fails on short ones.
			e.printStackTrace();
			System.exit(1);
		}
	}

	static void run(String[] args) throws Exception {
		String bootstrap = args[0], topic = args[1], prefix = args[2];
		Properties plainProps = new Properties();
		plainProps.put("bootstrap.servers", bootstrap);
		plainProps.put("key.serializer", ByteArraySerializer.class.getName());
		plainProps.put("value.serializer", ByteArraySerializer.class.getName());
		Properties txProps = (Properties) plainProps.clone();
		// One transactional id per topic: producers sharing an id fence each other.
		txProps.put("transactional.id", "tx-" + topic);
		try (KafkaProducer<byte[], byte[]> plain = new KafkaProducer<>(plainProps);
				KafkaProducer<byte[], byte[]> tx = new KafkaProducer<>(txProps)) {
			tx.initTransactions();
			int seq = 0;
			for (int i = 3; i < args.length; i++) {
				String[] op = args[i].split(":");
				int n = Integer.parseInt(op[1]);
				switch (op[0]) {
					case "plain":
						for (int j = 0; j < n; j++) {
							plain.send(record(topic, prefix, seq++, "plain")).get();
						}
						break;
					case "commit":
					case "abort":
						tx.beginTransaction();
						for (int j = 0; j < n; j++) {
							tx.send(record(topic, prefix, seq++, op[0]));
						}
						tx.flush(); // aborted records are in the log too
						if (op[0].equals("commit")) {
							tx.commitTransaction();
						} else {
							tx.abortTransaction();
						}
						break;
					case "hold":
						tx.beginTransaction();
						for (int j = 0; j < n; j++) {
							tx.send(record(topic, prefix, seq++, "commit"));
						}
						tx.flush();
						java.nio.file.Path go = java.nio.file.Path.of(op[2]);
						java.nio.file.Files.createFile(java.nio.file.Path.of(op[2] + ".ready"));
						while (!java.nio.file.Files.exists(go)) {
							Thread.sleep(50);
						}
						tx.commitTransaction();
						break;
					default:
						throw new IllegalArgumentException("unknown op " + args[i]);
				}
			}
		}
	}

	static ProducerRecord<byte[], byte[]> record(String topic, String prefix, int seq, String kind) {
		ProducerRecord<byte[], byte[]> r = new ProducerRecord<>(topic, null,
				("k" + (seq % 3)).getBytes(StandardCharsets.UTF_8), kind.getBytes(StandardCharsets.UTF_8));
		r.headers().add("Idempotency-Key", (prefix + "-" + seq).getBytes(StandardCharsets.UTF_8));
		return r;
	}
}
