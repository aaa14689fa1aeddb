//! DNS queries with the real `dig` (bind9-dnsutils), run inside a namespace, and its answers
//! parsed into sections: an independent client for peerd's DNS server.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::netns::Netns;

/// How one query is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Transport {
    /// UDP (dig's default).
    #[default]
    Udp,
    /// TCP (`+tcp`).
    Tcp,
}

/// One resource record as dig prints it: `name ttl class type data`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Owner name, lowercase, with the trailing dot.
    pub name: String,
    /// TTL in seconds.
    pub ttl: u32,
    /// `A`, `SRV`, `SOA`, ...
    pub rtype: String,
    /// The rdata in presentation form (`10.253.1.2`, `0 1 80 web.shop.global.`).
    pub data: String,
}

/// What came back: the header's status and flags and the answer and authority sections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// `NOERROR`, `NXDOMAIN`, `SERVFAIL`, `REFUSED`, ...
    pub status: String,
    /// Header flags (`qr`, `aa`, `rd`, `ra`, `tc`).
    pub flags: Vec<String>,
    /// The answer section.
    pub answer: Vec<Record>,
    /// The authority section.
    pub authority: Vec<Record>,
}

impl Answer {
    /// Whether the header carries `flag` (`aa`, `tc`, ...).
    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    /// The rdata of the answer records of type `rtype`.
    pub fn data(&self, rtype: &str) -> Vec<&str> {
        self.answer
            .iter()
            .filter(|r| r.rtype == rtype)
            .map(|r| r.data.as_str())
            .collect()
    }

    /// The owner names of the authority records of type `rtype`.
    pub fn authority_owners(&self, rtype: &str) -> Vec<&str> {
        self.authority
            .iter()
            .filter(|r| r.rtype == rtype)
            .map(|r| r.name.as_str())
            .collect()
    }
}

/// Asks `server` for `name`/`rtype` with `dig`, run in `ns`: one try, waiting at most
/// `timeout` (whole seconds, at least 1). An error when dig gets no answer at all.
pub fn dig(
    ns: &Netns,
    server: SocketAddr,
    name: &str,
    rtype: &str,
    transport: Transport,
    timeout: Duration,
) -> Result<Answer> {
    let (at, port) = (format!("@{}", server.ip()), server.port().to_string());
    let wait = format!("+time={}", timeout.as_secs().max(1));
    let mut args = vec![
        "dig",
        &at,
        "-p",
        &port,
        name,
        rtype,
        "+tries=1",
        &wait,
        "+noall",
        "+comments",
        "+answer",
        "+authority",
        "+nocookie",
    ];
    if transport == Transport::Tcp {
        args.push("+tcp");
    }
    let out = ns.exec(&args)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "dig {name} {rtype} at {server} in {} failed ({}): {}{}",
            ns.name(),
            out.status,
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    parse(&stdout).with_context(|| format!("dig {name} {rtype} at {server} printed {stdout:?}"))
}

/// Parses dig's `+noall +comments +answer +authority` output.
pub fn parse(text: &str) -> Result<Answer> {
    let mut status = None;
    let mut flags = None;
    let (mut answer, mut authority) = (Vec::new(), Vec::new());
    let mut section: Option<&mut Vec<Record>> = None;
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix(";; ->>HEADER<<-") {
            status = rest
                .split(',')
                .find_map(|f| f.trim().strip_prefix("status: "))
                .map(str::to_owned);
        } else if let Some(rest) = line.strip_prefix(";; flags:") {
            let list = rest.split(';').next().unwrap_or_default();
            flags = Some(list.split_whitespace().map(str::to_owned).collect());
        } else if line == ";; ANSWER SECTION:" {
            section = Some(&mut answer);
        } else if line == ";; AUTHORITY SECTION:" {
            section = Some(&mut authority);
        } else if line.is_empty() || line.starts_with(';') {
            if line.is_empty() || line.starts_with(";;") {
                section = None;
            }
        } else if let Some(records) = section.as_deref_mut() {
            records.push(record(line)?);
        }
    }
    Ok(Answer {
        status: status.context("no header status")?,
        flags: flags.context("no header flags")?,
        answer,
        authority,
    })
}

fn record(line: &str) -> Result<Record> {
    let mut fields = line.split_whitespace();
    let mut next = |what: &str| {
        fields
            .next()
            .with_context(|| format!("record {line:?}: no {what}"))
    };
    let name = next("name")?.to_ascii_lowercase();
    let ttl = next("ttl")?
        .parse()
        .with_context(|| format!("record {line:?}: bad ttl"))?;
    let _class = next("class")?;
    let rtype = next("type")?.to_owned();
    let data = fields.collect::<Vec<_>>().join(" ");
    Ok(Record {
        name,
        ttl,
        rtype,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_header_and_sections() {
        let text = "\
;; Got answer:
;; ->>HEADER<<- opcode: QUERY, status: NXDOMAIN, id: 4242
;; flags: qr aa rd; QUERY: 1, ANSWER: 0, AUTHORITY: 1, ADDITIONAL: 1
;; WARNING: recursion requested but not available

;; OPT PSEUDOSECTION:
; EDNS: version: 0, flags:; udp: 1232
;; AUTHORITY SECTION:
global.\t\t\t5\tIN\tSOA\tns.global. hostmaster.global. 3 60 30 3600 5
";
        let a = parse(text).unwrap();
        assert_eq!(a.status, "NXDOMAIN");
        assert!(a.has_flag("aa") && !a.has_flag("tc"));
        assert!(a.answer.is_empty());
        assert_eq!(a.authority_owners("SOA"), ["global."]);
        assert_eq!(a.authority[0].ttl, 5);
        assert_eq!(
            a.authority[0].data,
            "ns.global. hostmaster.global. 3 60 30 3600 5"
        );
    }

    #[test]
    fn reads_answer_records() {
        let text = "\
;; ->>HEADER<<- opcode: QUERY, status: NOERROR, id: 1
;; flags: qr aa; QUERY: 1, ANSWER: 1, AUTHORITY: 0, ADDITIONAL: 0

;; ANSWER SECTION:
_http._tcp.WEB.shop.global. 5\tIN\tSRV\t0 1 80 web.shop.global.
";
        let a = parse(text).unwrap();
        assert_eq!(a.data("SRV"), ["0 1 80 web.shop.global."]);
        assert_eq!(a.answer[0].name, "_http._tcp.web.shop.global.");
        assert!(parse(";; flags: qr;").is_err());
    }
}
