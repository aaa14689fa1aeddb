//! Exporting and withdrawing a service on one cluster: what the other cluster's DNS answers, and
//! how soon.

use std::time::{Duration, Instant};

use super::*;

/// The target: a change on east-0 shows in west-0's DNS within this long.
const WITHIN: Duration = Duration::from_secs(1);
/// How long a timed poll runs before the test gives up (well past [`WITHIN`], to measure a slow
/// propagation instead of only failing it).
const GIVE_UP: Duration = Duration::from_secs(10);

#[test]
fn an_export_resolves_across_clusters_within_1s_and_its_removal_within_1s() {
    require_dns!();
    let mut mesh = dns_lab("dexp", Setup::default());
    for i in [EAST0, WEST0] {
        let a = ask(&mesh, i, WEB, "A");
        assert_eq!(
            (a.status.as_str(), a.has_flag("aa")),
            ("NXDOMAIN", true),
            "{} before the export: {a:?}",
            mesh.node(i).name
        );
    }

    // Export: east-0's config gains the service, then SIGHUP.
    let web = web(&mesh);
    let east = mesh.node_mut(EAST0).expect("east-0");
    east.config_mut().services.push(web);
    east.reload().expect("SIGHUP east-0");
    let hup = Instant::now();
    let [east_at, west_at] =
        first_times(&mesh, hup, "an A record for web", |a| single_a(a).is_some());
    eprintln!(
        "export: east-0 answers {east_at:?} after SIGHUP, west-0 {west_at:?} after it \
         ({:?} after east-0)",
        west_at.saturating_sub(east_at)
    );
    assert!(
        west_at < WITHIN,
        "west-0 resolved {WEB} only {west_at:?} after east-0's SIGHUP (east-0: {east_at:?})"
    );
    check_names(&mesh);

    // Withdraw: the service leaves east-0's config, then SIGHUP.
    let east = mesh.node_mut(EAST0).expect("east-0");
    east.config_mut().services.clear();
    east.reload().expect("SIGHUP east-0");
    let hup = Instant::now();
    let [east_at, west_at] =
        first_times(&mesh, hup, "NXDOMAIN for web", |a| a.status == "NXDOMAIN");
    eprintln!(
        "removal: east-0 answers NXDOMAIN {east_at:?} after SIGHUP, west-0 {west_at:?} after it \
         ({:?} after east-0)",
        west_at.saturating_sub(east_at)
    );
    assert!(
        west_at < WITHIN,
        "west-0 still resolved {WEB} {west_at:?} after east-0's SIGHUP (east-0: {east_at:?})"
    );
    for name in ["east.web.shop.global", "_http._tcp.web.shop.global"] {
        let a = ask(&mesh, WEST0, name, "A");
        assert_eq!(a.status, "NXDOMAIN", "{name} after the removal: {a:?}");
    }
    let list = services(&mesh, WEST0);
    assert!(
        service(&list, WEB).is_none(),
        "west-0 still lists {WEB}: {list}"
    );
}

/// With the service exported: every name and record west-0 and east-0 serve for it agrees
/// with the catalog `peerd services --json` shows on both.
fn check_names(mesh: &MeshLab) {
    let list = services(mesh, WEST0);
    let entry = service(&list, WEB).unwrap_or_else(|| panic!("west-0 lists no {WEB}: {list}"));
    let vip = entry["vip"].as_str().expect("a vip").to_owned();
    let east_vip = entry["clusters"]["east"]["vip"]
        .as_str()
        .expect("east's vip")
        .to_owned();
    assert!(
        vip.starts_with("10.253.") && east_vip.starts_with("10.253.") && vip != east_vip,
        "virtual IPs {vip} and {east_vip} (from the default 10.253.0.0/16, one per name)"
    );
    let endpoints = &entry["clusters"]["east"]["endpoints"];
    assert_eq!(endpoints[0]["address"], "10.1.0.10", "{entry}");
    assert_eq!(endpoints[0]["ports"]["http"], 8080, "{entry}");
    assert_eq!(endpoints[0]["node"], "east-0", "{entry}");
    assert_eq!(endpoints[0]["node_alive"], true, "{entry}");
    let on_east = services(mesh, EAST0);
    assert_eq!(
        service(&on_east, WEB).map(|s| &s["vip"]),
        Some(&entry["vip"]),
        "east-0's catalog disagrees: {on_east}"
    );

    // The same virtual IPs from both servers, authoritatively.
    for i in [WEST0, EAST0] {
        let who = &mesh.node(i).name;
        for (name, want) in [(WEB, &vip), ("east.web.shop.global", &east_vip)] {
            let a = ask(mesh, i, name, "A");
            assert_eq!(single_a(&a).as_ref(), Some(want), "{who}: {name}: {a:?}");
            assert!(a.has_flag("aa"), "{who}: {name}: {a:?}");
        }
    }

    let srv = ask(mesh, WEST0, "_http._tcp.web.shop.global", "SRV");
    let records = srv.data("SRV");
    let fields: Vec<&str> = records.first().map_or(vec![], |r| r.split(' ').collect());
    assert!(
        records.len() == 1 && fields.get(2..) == Some(&["80", "web.shop.global."][..]),
        "SRV of _http._tcp.{WEB}: {srv:?}"
    );
    eprintln!("{WEB} = {vip}, east.{WEB} = {east_vip}, SRV {}", records[0]);
}

/// Polls east-0's and west-0's DNS servers (dig from each pod, back to back) until `done` holds
/// on each one's answer for [`WEB`]; returns when it first held for each, measured from `since`.
fn first_times<F>(mesh: &MeshLab, since: Instant, what: &str, done: F) -> [Duration; 2]
where
    F: Fn(&Answer) -> bool,
{
    let mut at = [None; 2];
    let mut last = [None, None];
    while at.iter().any(Option::is_none) {
        for (slot, i) in [EAST0, WEST0].into_iter().enumerate() {
            if at[slot].is_some() {
                continue;
            }
            match try_ask(mesh, i, WEB, "A", Transport::Udp) {
                Ok(a) if done(&a) => at[slot] = Some(since.elapsed()),
                Ok(a) => last[slot] = Some(format!("{a:?}")),
                Err(e) => last[slot] = Some(format!("{e:#}")),
            }
        }
        if since.elapsed() > GIVE_UP {
            panic!(
                "no {what} after {GIVE_UP:?}: east-0 {:?}, west-0 {:?}; last answers {last:?}\n{}",
                at[0],
                at[1],
                mesh.logs()
            );
        }
    }
    at.map(Option::unwrap_or_default)
}
