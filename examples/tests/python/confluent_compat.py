"""Confluent's Python client on the other side of Weir's codecs.

Run by examples/tests/confluent_python.rs with PYTHONPATH pointing at
confluent-kafka (installed by scripts/setup). Subcommands:

  produce BOOTSTRAP REGISTRY DESCRIPTORS N
      writes N records to py.avro, py.proto and py.json with Confluent's
      serializers, keys and values; every third record uses the v2 schema.
  consume BOOTSTRAP REGISTRY DESCRIPTORS N
      reads N records from each of weir.avro, weir.proto and weir.json
      (written by Weir) with Confluent's deserializers and prints one JSON
      line per record: {"topic", "key", "value"}. Avro is read with the v1
      reader schema, Protobuf with the v2 message class.
  dlq BOOTSTRAP TOPIC N
      reads N records of a DLQ topic with a plain consumer and prints one
      JSON line per record: headers (name -> UTF-8 text), key and payload in hex.

DESCRIPTORS is a directory with v1.bin, v2.bin and key.bin: serialized
FileDescriptorSets of the .proto files the Rust test compiled (Python builds
its message classes from them, as generated code would).
"""

import json
import os
import sys

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.json_schema import JSONDeserializer, JSONSerializer
from confluent_kafka.schema_registry.protobuf import ProtobufDeserializer, ProtobufSerializer
from confluent_kafka.serialization import MessageField, SerializationContext, StringSerializer
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.json_format import MessageToDict

# Seconds per registry request: the client's default is no limit at all, so a
# registry that accepts a connection and never answers would hang the test.
SR_TIMEOUT_S = 30

AVRO_V1 = json.dumps({"type": "record", "name": "Click", "namespace": "shop", "fields": [
    {"name": "link", "type": "string"}, {"name": "at_ms", "type": "long"}]})
AVRO_V2 = json.dumps({"type": "record", "name": "Click", "namespace": "shop", "fields": [
    {"name": "link", "type": "string"}, {"name": "at_ms", "type": "long"},
    {"name": "referrer", "type": ["null", "string"], "default": None}]})
AVRO_KEY = json.dumps("string")
JSON_V1 = json.dumps({"$schema": "http://json-schema.org/draft-07/schema#", "title": "shop.Click",
                      "type": "object", "properties": {"link": {"type": "string"},
                                                       "at_ms": {"type": "integer", "minimum": 0}},
                      "required": ["link", "at_ms"]})
JSON_V2 = json.dumps({"$schema": "http://json-schema.org/draft-07/schema#", "title": "shop.Click",
                      "type": "object", "properties": {"link": {"type": "string"},
                                                       "at_ms": {"type": "integer", "minimum": 0},
                                                       "referrer": {"type": "string"}},
                      "required": ["link", "at_ms"]})
JSON_KEY = json.dumps({"$schema": "http://json-schema.org/draft-07/schema#", "type": "string",
                       "maxLength": 64})


def classes(path, *names):
    fds = descriptor_pb2.FileDescriptorSet()
    with open(path, "rb") as f:
        fds.ParseFromString(f.read())
    pool = descriptor_pool.DescriptorPool()
    for fd in fds.file:
        pool.Add(fd)
    return [message_factory.GetMessageClass(pool.FindMessageTypeByName(n)) for n in names]


def ctx(topic, field):
    return SerializationContext(topic, field)


def produce(bootstrap, registry, descriptors, n):
    sr = SchemaRegistryClient({"url": registry, "timeout": SR_TIMEOUT_S})
    (ClickV1,) = classes(os.path.join(descriptors, "v1.bin"), "shop.Click")
    (ClickV2,) = classes(os.path.join(descriptors, "v2.bin"), "shop.Click")
    (ClickKey,) = classes(os.path.join(descriptors, "key.bin"), "shop.ClickKey")
    avro = (AvroSerializer(sr, AVRO_KEY), AvroSerializer(sr, AVRO_V1), AvroSerializer(sr, AVRO_V2))
    proto = (ProtobufSerializer(ClickKey, sr), ProtobufSerializer(ClickV1, sr),
             ProtobufSerializer(ClickV2, sr))
    js = (JSONSerializer(JSON_KEY, sr), JSONSerializer(JSON_V1, sr), JSONSerializer(JSON_V2, sr))
    p = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for i in range(n):
        link = "l%d" % (i % 5)
        v2 = i % 3 == 0
        click = {"link": link, "at_ms": i}
        if v2:
            click["referrer"] = "ad"
        t = "py.avro"
        p.produce(t, key=avro[0](link, ctx(t, MessageField.KEY)),
                  value=avro[2 if v2 else 1](click, ctx(t, MessageField.VALUE)))
        t = "py.proto"
        msg = (ClickV2 if v2 else ClickV1)(link=link, at_ms=i)
        msg.price.cents = i * 100
        msg.price.currency = "EUR"
        if v2:
            msg.referrer = "ad"
        p.produce(t, key=proto[0](ClickKey(link=link), ctx(t, MessageField.KEY)),
                  value=proto[2 if v2 else 1](msg, ctx(t, MessageField.VALUE)))
        t = "py.json"
        p.produce(t, key=js[0](link, ctx(t, MessageField.KEY)),
                  value=js[2 if v2 else 1](click, ctx(t, MessageField.VALUE)))
    left = p.flush(30)
    if left:
        sys.exit("%d records not delivered" % left)


def read(bootstrap, topic, n):
    # Partitions assigned directly from the beginning: no consumer group to
    # join, so a busy broker (coordinator loading) cannot stall the read.
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "py-" + topic,
                  "enable.auto.commit": False})
    parts = c.list_topics(topic, timeout=30).topics[topic].partitions
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
    out = []
    idle = 0
    while len(out) < n and idle < 120:
        m = c.poll(1.0)
        if m is None:
            idle += 1
            continue
        if m.error():
            sys.exit("consume %s: %s" % (topic, m.error()))
        out.append(m)
    c.close()
    if len(out) < n:
        sys.exit("%s: read %d of %d records" % (topic, len(out), n))
    return out


def consume(bootstrap, registry, descriptors, n):
    sr = SchemaRegistryClient({"url": registry, "timeout": SR_TIMEOUT_S})
    (ClickV2,) = classes(os.path.join(descriptors, "v2.bin"), "shop.Click")
    (ClickKey,) = classes(os.path.join(descriptors, "key.bin"), "shop.ClickKey")
    # Protobuf is read without the registry: Apicurio 3.3's ccompat API
    # cannot serve `?format=serialized`, which the Python deserializer asks
    # for when it has a registry client (see docs/codecs.md).
    proto = (ProtobufDeserializer(ClickKey, {}), ProtobufDeserializer(ClickV2, {}))
    avro = (AvroDeserializer(sr), AvroDeserializer(sr, AVRO_V1))
    js = (JSONDeserializer(None, schema_registry_client=sr), JSONDeserializer(None, schema_registry_client=sr))
    for topic, (dk, dv) in (("weir.avro", avro), ("weir.proto", proto), ("weir.json", js)):
        for m in read(bootstrap, topic, n):
            k = dk(m.key(), ctx(topic, MessageField.KEY))
            v = dv(m.value(), ctx(topic, MessageField.VALUE))
            if topic == "weir.proto":
                k = k.link
                v = MessageToDict(v, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
            print(json.dumps({"topic": topic, "key": k, "value": v}), flush=True)


def dlq(bootstrap, topic, n):
    for m in read(bootstrap, topic, n):
        headers = {}
        for name, value in m.headers() or []:
            headers[name] = None if value is None else value.decode("utf-8")
        print(json.dumps({"headers": headers, "key": (m.key() or b"").hex(),
                          "payload": (m.value() or b"").hex(), "partition": m.partition(),
                          "offset": m.offset()}), flush=True)


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "produce":
        produce(args[0], args[1], args[2], int(args[3]))
    elif cmd == "consume":
        consume(args[0], args[1], args[2], int(args[3]))
    elif cmd == "dlq":
        dlq(args[0], args[1], int(args[2]))
    else:
        sys.exit("unknown command " + cmd)
