//! A peerd crash in the middle of a transfer: SIGKILL, restart with the same config, and the
//! TCP stream (whose sockets outlive the daemon) carries on to the last byte.

use std::time::{Duration, Instant};

use netns_tests::{Lab, Need, TcpSink, require, tcp_send_paced, wait_ping, wait_until};

use super::*;

/// Stream length and pace: 48 MB at 8 MB/s lasts about 6 s, so the kill lands mid-stream.
const STREAM: u64 = 48 << 20;
const PACE: u64 = 8 << 20;

#[test]
fn peerd_restart_mid_transfer_resumes_the_stream() {
    require!(
        Need::Root,
        Need::Tun,
        Need::Ip,
        Need::Ping,
        Need::WireguardGo,
        Need::Wg,
        Need::Peerd
    );
    let lab = Lab::new("rst").expect("lab");
    let pair = lab.pair().expect("underlay");
    let mut m = mixed(
        &lab,
        &pair,
        true,
        true,
        &str_refs(&inner(true)),
        None,
        |_| {},
    );
    wait_ping(&pair.a, B_IN.into(), UP)
        .unwrap_or_else(|e| panic!("tunnel up: {e:#}\n{}", m.peerd.logs()));

    let sink = TcpSink::start(&pair.b, sa(B_IN, 5001)).expect("sink on the wireguard-go side");
    let a_ns = pair.a.handle();
    let sender =
        std::thread::spawn(move || tcp_send_paced(&a_ns, sa(B_IN, 5001), STREAM, 41, Some(PACE)));
    wait_until(Duration::from_secs(30), "4 MB before the kill", || {
        Ok(sink.progress() >= 4 << 20)
    })
    .unwrap_or_else(|e| panic!("{e:#}\n{}", m.peerd.logs()));

    m.peerd.kill().expect("SIGKILL peerd");
    let at_kill = sink.progress();
    assert!(at_kill < STREAM, "the stream finished before the kill");
    m.peerd
        .restart()
        .expect("peerd starts again with the same config");
    let ready = Instant::now();
    let at_ready = sink.progress();
    wait_until(
        Duration::from_secs(5),
        "the receiver's counter to grow after the restart",
        || Ok(sink.progress() >= at_ready + (1 << 20)),
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e:#} (killed at {at_kill} bytes, {at_ready} at ready)\n{}\n{}",
            m.peerd.logs(),
            m.wg.log_tail()
        )
    });
    eprintln!(
        "stream resumed {:?} after peerd was ready again (killed at {at_kill} bytes)",
        ready.elapsed()
    );

    let sent = sender
        .join()
        .expect("sender thread")
        .expect("the sender survives the restart");
    let got = sink.wait(TRANSFER_TIMEOUT).expect("receive");
    assert_eq!(got, sent, "the stream arrived damaged");
    assert_eq!(got.bytes, STREAM);
}
