//! Waiting for a condition with a deadline: the only way this harness waits for readiness.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};

/// An error that stops [`wait_until`] at once instead of being retried (the awaited thing can
/// no longer happen: the process died).
#[derive(Debug)]
pub struct GiveUp(pub String);

impl std::fmt::Display for GiveUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for GiveUp {}

/// How often [`wait_until`] polls.
const POLL: Duration = Duration::from_millis(50);

/// Polls `cond` every 50 ms until it returns `Ok(true)`, failing after `timeout`.
///
/// An `Err` from `cond` does not stop the wait (the thing may not be up yet); the last one is
/// reported if the deadline passes. A [`GiveUp`] error ends the wait at once. `what` names the
/// condition in the error.
pub fn wait_until<F>(timeout: Duration, what: &str, mut cond: F) -> Result<()>
where
    F: FnMut() -> Result<bool>,
{
    let deadline = Instant::now() + timeout;
    let mut last_err = None;
    loop {
        match cond() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) if e.is::<GiveUp>() => {
                return Err(e.context(format!("gave up waiting for {what}")));
            }
            Err(e) => last_err = Some(e),
        }
        if Instant::now() >= deadline {
            match last_err {
                Some(e) => {
                    bail!("timed out after {timeout:?} waiting for {what}; last error: {e:#}")
                }
                None => bail!("timed out after {timeout:?} waiting for {what}"),
            }
        }
        std::thread::sleep(POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_once_the_condition_holds() {
        let mut n = 0;
        wait_until(Duration::from_secs(5), "third poll", || {
            n += 1;
            Ok(n >= 3)
        })
        .unwrap();
        assert_eq!(n, 3);
    }

    #[test]
    fn reports_the_last_error_at_the_deadline() {
        let err = wait_until(Duration::from_millis(120), "never", || {
            anyhow::bail!("still down")
        })
        .unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("never") && msg.contains("still down"), "{msg}");
    }

    #[test]
    fn gives_up_at_once() {
        let start = std::time::Instant::now();
        let err = wait_until(Duration::from_secs(10), "a dead process", || {
            Err(GiveUp("it exited".to_owned()).into())
        })
        .unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(1));
        assert!(format!("{err:#}").contains("it exited"));
    }
}
