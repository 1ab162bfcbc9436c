//! Index response frames, read as a client reads them (length prefix checked
//! against `MAX_RESPONSE_FRAME` first), then what a client does with them:
//! hits merged with flood hits, the topology drawn.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peernet_fuzz::decode_both;
use peernet_proto::{answers, index::Response, limits::MAX_RESPONSE_FRAME, topo::Graph};

fuzz_target!(|data: &[u8]| {
    for response in decode_both::<Response>(data, MAX_RESPONSE_FRAME) {
        match response {
            Response::Hits(hits) => {
                let twice = answers::combine::<()>(Ok(hits.clone()), Ok(hits.clone())).expect("both answered");
                assert_eq!(twice.len(), hits.len(), "merging hits with themselves added hits");
            }
            Response::Online { peers, .. } => {
                for peer in peers {
                    let _ = peer.peer.addr.to_endpoint_addr();
                }
            }
            Response::Peers(peers) => {
                for peer in peers {
                    let _ = peer.addr.to_endpoint_addr();
                }
            }
            Response::Topology(topology) => {
                let graph = Graph::from_topology(&topology);
                let _ = graph.is_connected();
                let _ = graph.to_text();
                let _ = graph.to_dot();
            }
            _ => {}
        }
    }
});
