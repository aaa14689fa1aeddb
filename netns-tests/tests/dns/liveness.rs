//! A node's death reaches the catalog: its endpoints stay listed but marked not alive.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::*;

/// The target for marking a killed node's endpoints.
const DEAD_WITHIN: Duration = Duration::from_secs(3);
/// How long the poll runs before the test gives up (past [`DEAD_WITHIN`], to measure).
const GIVE_UP: Duration = Duration::from_secs(15);

#[test]
fn a_killed_nodes_endpoints_are_marked_dead_within_3s() {
    require_dns!();
    let mut mesh = dns_lab(
        "dliv",
        Setup {
            export_at_start: true,
            ..Setup::default()
        },
    );
    mesh.wait_for(
        Duration::from_secs(5),
        "west-0 to list east-0's endpoint alive",
        |m| Ok(missing(&m.node(WEST0).services()?, true)),
    )
    .unwrap_or_else(|e| panic!("{e:#}"));

    mesh.node_mut(EAST0)
        .expect("east-0")
        .kill()
        .expect("SIGKILL east-0");
    let killed = Instant::now();
    let took = mesh
        .wait_for(GIVE_UP, "west-0 to mark east-0's endpoint dead", |m| {
            Ok(missing(&m.node(WEST0).services()?, false))
        })
        .unwrap_or_else(|e| panic!("{e:#}"));
    let state = mesh.node(WEST0).state_of("east-0").expect("west-0 status");
    let dns = try_ask(&mesh, WEST0, WEB, "A", Transport::Udp).map_or_else(
        |e| format!("{e:#}"),
        |a| format!("{} {:?}", a.status, a.answer),
    );
    eprintln!(
        "east-0 killed: west-0 marks its endpoint dead {took:?} after ({:?} incl. the last \
         poll); west-0 shows east-0 {state:?}; {WEB} on west-0 now: {dns}",
        killed.elapsed()
    );
    assert!(
        took <= DEAD_WITHIN,
        "east-0's endpoint marked dead only {took:?} after SIGKILL"
    );
}

/// What differs from "web's only endpoint in east is east-0's pod, with `node_alive` equal to
/// `alive`", in a `peerd services --json` document; `None` when it holds.
fn missing(list: &Value, alive: bool) -> Option<String> {
    let Some(entry) = service(list, WEB) else {
        return Some(format!("no {WEB} in {list}"));
    };
    let endpoints = &entry["clusters"]["east"]["endpoints"];
    let ok = endpoints.as_array().is_some_and(|e| e.len() == 1)
        && endpoints[0]["node"] == "east-0"
        && endpoints[0]["address"] == "10.1.0.10"
        && endpoints[0]["node_alive"] == alive;
    (!ok).then(|| format!("east's endpoints are {endpoints}"))
}
