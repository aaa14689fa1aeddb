//! `peerd demo` as an unprivileged user (`nobody`, through `setpriv`), each run in its own
//! network namespace so that its loopback ports and virtual IPs are its own:
//!
//! - the demo's mesh answers a real `dig` for a cluster-pinned global name and a real `curl`
//!   through east-1's proxy is answered by cluster west's node (so the request crossed the
//!   userspace tunnel between clusters); Ctrl-C (SIGINT) then stops everything and leaves no
//!   process, socket or folder behind;
//! - `--failover` stops every endpoint of cluster east under load and reports zero failed
//!   requests, with west carrying the traffic.
//!
//! Needs root (to create the namespace and drop to `nobody`), `ip`, `setpriv`, `dig`, `curl` and
//! the peerd binary; otherwise each test says SKIPPED, or fails under `CI=true`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use netns_tests::{Lab, Need, Netns, peerd_bin, require};

macro_rules! require_demo {
    () => {
        require!(
            Need::Root,
            Need::Ip,
            Need::Setpriv,
            Need::Dig,
            Need::Curl,
            Need::Peerd
        )
    };
}

/// A namespace with loopback up and a copy of peerd that `nobody` may run (the checkout may sit
/// in a folder only root can enter).
fn prepare(tag: &str) -> (Lab, Netns, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let lab = Lab::new(tag).expect("lab");
    let ns = lab.netns("demo").expect("namespace");
    ns.ip(&["link", "set", "lo", "up"]).expect("lo up");
    let bin = lab.path("peerd");
    std::fs::copy(peerd_bin().expect("peerd binary"), &bin).expect("copy peerd");
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::set_permissions(lab.dir(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    (lab, ns, bin)
}

/// Starts `peerd demo ARGS` as nobody inside `ns`; its stdout lines arrive on the channel.
fn start_demo(ns: &Netns, bin: &Path, args: &[&str]) -> (Child, mpsc::Receiver<String>) {
    let mut argv = vec![
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--",
        bin.to_str().expect("utf-8 path"),
        "demo",
    ];
    argv.extend_from_slice(args);
    let mut child = ns
        .spawn(&argv, Stdio::piped(), Stdio::inherit())
        .expect("start the demo");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Collects lines until one contains `marker` (returned with everything before it).
fn read_until(rx: &mpsc::Receiver<String>, marker: &str, limit: Duration) -> Vec<String> {
    let deadline = Instant::now() + limit;
    let mut lines = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => {
                let done = line.contains(marker);
                lines.push(line);
                if done {
                    return lines;
                }
            }
            Err(_) => break,
        }
    }
    panic!(
        "no line with {marker:?} within {limit:?}; output so far:\n{}",
        lines.join("\n")
    );
}

/// The demo's folder, from its first line (`... in /tmp/peerd-demo-...`).
fn demo_dir(lines: &[String]) -> PathBuf {
    let line = lines
        .iter()
        .find(|l| l.contains(" in /"))
        .expect("folder line");
    PathBuf::from(line.rsplit(" in ").next().expect("path").trim())
}

/// Whether any process still mentions `dir` on its command line.
fn processes_mentioning(dir: &Path) -> Vec<String> {
    let needle = dir.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(&needle) {
                found.push(format!(
                    "{}: {cmdline}",
                    entry.file_name().to_string_lossy()
                ));
            }
        }
    }
    found
}

/// Resolves `name` with a real `dig` against the demo DNS on `dns_port` and GETs it on port 8080
/// with a real `curl`, both inside `ns`: the virtual IP and the body.
fn get_by_name(ns: &Netns, dns_port: u16, name: &str) -> (String, String) {
    let port = dns_port.to_string();
    let vip = ns
        .run(&[
            "dig",
            "@127.0.0.1",
            "-p",
            &port,
            "+short",
            "+time=2",
            "+tries=2",
            name,
        ])
        .expect("dig");
    let vip = vip.trim().to_owned();
    let resolve = format!("{name}:8080:{vip}");
    let url = format!("http://{name}:8080/");
    let body = ns
        .run(&[
            "curl",
            "-sS",
            "--max-time",
            "5",
            "--resolve",
            &resolve,
            &url,
        ])
        .unwrap_or_else(|e| panic!("curl {url} via {vip}: {e:#}"));
    (vip, body)
}

fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the demo did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn demo_as_nobody_answers_across_clusters_and_ctrl_c_leaves_nothing_behind() {
    require_demo!();
    let (_lab, ns, bin) = prepare("dmo");
    let (mut child, rx) = start_demo(&ns, &bin, &["--base-port", "47000"]);
    let lines = read_until(&rx, "runs until Ctrl-C", Duration::from_secs(90));
    let dir = demo_dir(&lines);
    let text = lines.join("\n");
    assert!(text.contains("answered by west-1"), "{text}");

    // A real resolver client and a real HTTP client, inside the demo's namespace.
    let (vip, body) = get_by_name(&ns, 47053, "west.web.demo.global");
    assert!(
        vip.starts_with("127."),
        "west.web.demo.global -> {vip:?}\n{text}"
    );
    assert!(
        body.contains("hello from west-1"),
        "pinned to west, answered: {body:?}"
    );
    // The unpinned name stays in east-1's own zone while it is healthy.
    let (_, body) = get_by_name(&ns, 47053, "web.demo.global");
    assert!(
        body.contains("hello from east-1"),
        "nearest endpoint answered: {body:?}"
    );
    let status = ns
        .run(&[
            bin.to_str().unwrap(),
            "status",
            "--json",
            "--socket",
            &dir.join("east-1.sock").to_string_lossy(),
        ])
        .expect("peerd status");
    let status: serde_json::Value = serde_json::from_str(&status).expect("status JSON");
    assert_eq!(status["node"]["mode"], "userspace", "{status}");

    // Ctrl-C: everything stops and goes away.
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let exit = wait_exit(&mut child, Duration::from_secs(15));
    assert!(exit.success(), "the demo exited with {exit}");
    assert!(!dir.exists(), "{} is still there", dir.display());
    assert_eq!(processes_mentioning(&dir), Vec::<String>::new());
    assert_eq!(
        ns.pids().expect("pids"),
        Vec::<i32>::new(),
        "processes left in the namespace"
    );
}

#[test]
fn demo_failover_moves_traffic_to_the_other_cluster_with_no_failed_request() {
    require_demo!();
    let (_lab, ns, bin) = prepare("dmf");
    let (mut child, rx) = start_demo(&ns, &bin, &["--failover", "--exit", "--base-port", "47200"]);
    let lines = read_until(&rx, "failover: ", Duration::from_secs(90));
    let dir = demo_dir(&lines);
    let lines = [lines, read_until(&rx, "requests,", Duration::from_secs(60))].concat();
    let exit = wait_exit(&mut child, Duration::from_secs(15));
    let text = lines.join("\n");
    assert!(exit.success(), "the demo exited with {exit}\n{text}");
    let summary = lines.last().expect("summary");
    assert!(summary.contains(", 0 failed;"), "{summary}");
    // West answered while east was stopped, and east answered again after it came back.
    let stopped = text.find("stopped every endpoint").expect("stop line");
    let started = text.find("started cluster east").expect("restart line");
    assert!(text[stopped..started].contains("west-1 100%"), "{text}");
    assert!(!summary.contains("again never"), "{summary}");
    assert!(!dir.exists(), "{} is still there", dir.display());
    assert_eq!(
        ns.pids().expect("pids"),
        Vec::<i32>::new(),
        "processes left in the namespace"
    );
}
