//! The admin socket: one JSON request line in, one JSON answer out. `peerd status` (and later
//! `services`, `explain`, `ping`) are clients of it.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;

/// Longest request line accepted.
const MAX_REQUEST: usize = 64 * 1024;

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// This node and its peers.
    Status,
    /// The mesh's service catalog.
    Services,
    /// Which endpoints a global name maps to from this node, and why.
    Explain {
        /// The global name.
        name: String,
    },
    /// Round trips through the tunnel to a node.
    Ping {
        /// Node name or cluster/name.
        node: String,
        /// Number of echo requests.
        count: u32,
    },
}

/// The answer envelope.
#[derive(Debug, Serialize, Deserialize)]
struct Reply {
    ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Sends `request` to the daemon at `socket` and returns its result.
pub fn call(socket: &Path, request: &Request) -> Result<serde_json::Value> {
    let stream = std::os::unix::net::UnixStream::connect(socket).with_context(|| {
        format!(
            "cannot reach peerd at {} (is it running?)",
            socket.display()
        )
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut line = serde_json::to_string(request)?;
    line.push('\n');
    (&stream).write_all(line.as_bytes())?;
    let mut answer = String::new();
    BufReader::new(&stream)
        .read_line(&mut answer)
        .context("no answer from peerd")?;
    let reply: Reply =
        serde_json::from_str(&answer).context("peerd sent an answer that is not JSON")?;
    match (reply.ok, reply.result, reply.error) {
        (true, Some(result), _) => Ok(result),
        (_, _, Some(error)) => bail!("peerd: {error}"),
        _ => bail!("peerd sent an empty answer"),
    }
}

/// Binds the admin socket, refusing to steal one a live daemon answers on.
pub fn bind(socket: &Path) -> Result<UnixListener> {
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    if socket.exists() {
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            bail!("another peerd already answers on {}", socket.display());
        }
        std::fs::remove_file(socket)
            .with_context(|| format!("cannot remove stale {}", socket.display()))?;
    }
    let listener = UnixListener::bind(socket)
        .with_context(|| format!("cannot listen on {}", socket.display()))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o660))?;
    Ok(listener)
}

/// Answers requests on `listener` with `handler` until the task is dropped.
pub async fn serve<H, F>(listener: UnixListener, handler: H)
where
    H: Fn(Request) -> F + Clone + Send + 'static,
    F: Future<Output = Result<serde_json::Value>> + Send,
{
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut reader = tokio::io::BufReader::new(read).take(MAX_REQUEST as u64);
            let mut line = String::new();
            let reply = match reader.read_line(&mut line).await {
                Ok(_) => match serde_json::from_str::<Request>(&line) {
                    Ok(request) => match handler(request).await {
                        Ok(result) => Reply {
                            ok: true,
                            result: Some(result),
                            error: None,
                        },
                        Err(e) => Reply {
                            ok: false,
                            result: None,
                            error: Some(format!("{e:#}")),
                        },
                    },
                    Err(e) => Reply {
                        ok: false,
                        result: None,
                        error: Some(format!("bad request: {e}")),
                    },
                },
                Err(e) => Reply {
                    ok: false,
                    result: None,
                    error: Some(format!("bad request: {e}")),
                },
            };
            let mut text =
                serde_json::to_string(&reply).unwrap_or_else(|_| "{\"ok\":false}".into());
            text.push('\n');
            let _ = write.write_all(text.as_bytes()).await;
        });
    }
}
