"""Sharded pub/sub (docs/protocol.md section 7) from every worker client at once: on a real Redis
Cluster, tempestd with ``[pubsub] sharded = yes`` SSUBSCRIBEs each channel on its master, so a
message reaches a stream only when its publisher sent SPUBLISH to that master (a PUBLISH is heard
by no stream). The Go, Node, PHP, Ruby and shell test apps, run as tempestd's [worker:]
sections, each publish to a plain and a durable channel of their own (spread over the three
masters): every stream gets its message, a durable one with its stream id, kept in its stream
on the channel's master; the end message ``["$unsubscribe"]`` ends a stream the same way."""

import json
import os
import re
from urllib.parse import quote

from support import REPO, LocalCluster, client_hello, wait_until

import client_cases
from sseclient import SSE

APPS = os.path.join(REPO, "tests", "clients")
# the test app of each client and its publish route (the Go and shell apps send a text of their own)
CLIENTS = {
    "go": (f"{REPO}/clients/go/bin/testworker", "/publish?c={channel}"),
    "node": (f"node {APPS}/node/roles.js app", "/publish?channel={channel}&data={data}"),
    "php": (f"php {APPS}/php/app.php", "/publish?channel={channel}&data={data}"),
    "ruby": (f"ruby {APPS}/ruby/app.rb site", "/publish?ch={channel}&data={data}"),
    "shell": (f"bash {APPS}/shell/app.sh", "/publish?c={channel}"),
}
ENDS = ("node", "php", "ruby")  # the apps that publish any text: "$unsubscribe" too
STREAM_ID = re.compile(r"\d+-\d+")


def spread(cluster, names):
    """For each name, a channel ``<name>.<n>`` served by the masters in turn."""
    channels = []
    for index, name in enumerate(names):
        master = cluster.masters[index % len(cluster.masters)]
        channels.append(next(channel for channel in (f"{name}.{n}" for n in range(1000))
                             if cluster.master_of(channel).port == master.port))
    return channels


def publish(client, language, queue, channel, data=None):
    """Have ``language``'s app publish "hello from <language>" (or ``data``) to ``channel`` (a url
    job pushed by hand): its answer's body."""
    route = CLIENTS[language][1].format(channel=channel, data=quote(data or f"hello from {language}"))
    env = {"method": "GET", "url": route, "headers": {}}
    # redis-cli opens a connection per command: the shell worker's answer may come on the tenth
    answer = client_cases.answer_commands(client, queue, "url", [env], connections=10, timeout=15)[-1][2]
    status, _, body = json.loads(answer)
    assert status == 200, (language, body)
    return body


def test_every_client_publishes_with_spublish_on_a_sharded_cluster(tempestd_factory, tmp_path):
    for language in CLIENTS:  # runtimes checked (support.missing_runtime), the Go binaries built
        client_hello(language, "x")
    cluster = LocalCluster(tmp_path / "c", masters=3, replicas=0).start()
    streams = {}
    try:
        # plain and durable in turn over the masters: a client's two channels on two masters
        channels = spread(cluster, [f"shard.{kind}.{lang}" for lang in CLIENTS for kind in "pd"])
        plain, durable = dict(zip(CLIENTS, channels[0::2])), dict(zip(CLIENTS, channels[1::2]))
        queues = {language: f"shard-{language}" for language in CLIENTS}
        workers = {f"worker:{lang}": {"command": f"{CLIENTS[lang][0]} {queues[lang]}"} for lang in CLIENTS}
        daemon = tempestd_factory(redis_url=cluster.url, front={"queue": "shard-none", "timeout": "5"},
                                  pubsub={"sharded": "yes", "durable": "shard.d.*"}, **workers)
        client = cluster.client()
        assert client.get("tempest:pubsub:sharded") == b"1"
        for channel in [*plain.values(), *durable.values()]:
            streams[channel] = SSE(daemon.port, "/sub/" + channel)
            assert streams[channel].next() == {"comment": "ok"}, channel  # SSUBSCRIBEd on its master
        wait_until(lambda: daemon.log().count("worker on shard-") == len(CLIENTS), 30, message="every client's worker")

        for language in CLIENTS:
            text = f"hello from {language}"
            count = publish(client, language, queues[language], plain[language])
            assert count.removeprefix("published ") == "1", (language, count)  # SPUBLISH's reply: the relay
            event = streams[plain[language]].next_message()
            assert event == {"data": text}, (language, event)

            answer = publish(client, language, queues[language], durable[language])
            stream_id = STREAM_ID.search(answer).group()
            event = streams[durable[language]].next_message()
            assert event == {"id": stream_id, "data": text}, (language, event)
            key = f"tempest:stream:{{{durable[language]}}}"
            owner = cluster.master_of(durable[language]).client()  # the channel's master holds its stream
            entries = owner.xrange(key)
            assert [(i.decode(), json.loads(f[b"m"])) for i, f in entries] == [(stream_id, [text])], language

        for language in ENDS:  # the end message goes the same way: the stream ends
            publish(client, language, queues[language], plain[language], "$unsubscribe")
            stream = streams[plain[language]]
            assert stream.next_message().get("event") == "end", language
            assert stream.next_message() is None, language  # and the stream closed
        assert "Traceback" not in daemon.log()
        client.close()
    finally:
        for stream in streams.values():
            stream.close()
        cluster.stop()
