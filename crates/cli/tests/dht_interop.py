"""libtorrent's DHT against one peernet DHT node, on loopback.

Run by dht_interop.rs as `python3 dht_interop.py HOST:PORT SECONDS`.
libtorrent (an independent implementation of BEP 5) is told about the
peernet node as a DHT node and sends it queries. It puts a node
into its routing table only after it has matched one of the node's answers
to its own query by transaction id, so the node showing up there is the
proof that libtorrent understood the answers. Exits 0 when it is there, 1
when the deadline passes first; prints what the routing table holds and
the last of libtorrent's DHT log either way.
"""

import sys
import time

import libtorrent as lt


def main():
    host, port = sys.argv[1].rsplit(":", 1)
    target = (host, int(port))
    deadline = time.monotonic() + float(sys.argv[2])

    cat = lt.alert.category_t
    ses = lt.session(
        {
            "listen_interfaces": "127.0.0.1:0",
            "enable_dht": True,
            # No routers: libtorrent never puts a router (a
            # dht_bootstrap_nodes entry) into its routing table. The peernet
            # node is added as a plain node below, so that it can get in.
            "dht_bootstrap_nodes": "",
            "enable_lsd": False,
            "enable_upnp": False,
            "enable_natpmp": False,
            # The test's DHT is one address, 127.0.0.1, with nodes whose ids
            # are not derived from it. libtorrent's defaults guard the public
            # DHT against one host posing as many nodes (one node per IP,
            # ids that match the IP as BEP 42 wants, no reserved addresses);
            # here they would only keep the node out for where it runs.
            "dht_restrict_routing_ips": False,
            "dht_restrict_search_ips": False,
            "dht_prefer_verified_node_ids": False,
            "dht_enforce_node_id": False,
            "dht_ignore_dark_internet": False,
            "alert_mask": cat.dht_notification | cat.dht_log_notification | cat.error_notification,
        }
    )
    ses.add_dht_node(target)

    # libtorrent's own node id: dht_live_nodes lists the routing table of
    # the local node with that id.
    own_id = None
    routing_table = []
    live = []
    log = []
    while time.monotonic() < deadline:
        if own_id is None:
            ids = ses.save_state(lt.save_state_flags_t.save_dht_state).get(b"dht state", {}).get(b"node-id", [])
            if ids:
                own_id = lt.sha1_hash(ids[0][:20])
        if own_id is not None:
            ses.dht_live_nodes(own_id)
        ses.post_dht_stats()
        # A poll, not a wait for a condition: libtorrent answers these
        # requests with alerts, which wait_for_alert below collects.
        ses.wait_for_alert(500)
        for a in ses.pop_alerts():
            if isinstance(a, lt.dht_stats_alert):
                routing_table = a.routing_table
            elif isinstance(a, lt.dht_live_nodes_alert):
                live = [(n["nid"], tuple(n["endpoint"])) for n in a.nodes]
            elif isinstance(a, (lt.dht_log_alert, lt.dht_pkt_alert)):
                # Repeats (a query's retries) are kept once.
                if a.message() not in log:
                    log.append(a.message())
                    del log[:-12]
        if any(endpoint == target for _, endpoint in live):
            break

    print(f"libtorrent {lt.__version__}, node id {own_id}")
    print(f"routing table buckets: {routing_table}")
    print(f"routing table nodes: {[f'{ep[0]}:{ep[1]} id {nid}' for nid, ep in live]}")
    found = any(endpoint == target for _, endpoint in live)
    if not found:
        print(f"the peernet node {host}:{port} is not in the routing table; libtorrent's last DHT log lines:")
        for line in log:
            print(f"  {line}")
    print("found" if found else "not found")
    return 0 if found else 1


if __name__ == "__main__":
    sys.exit(main())
