//! DNS TXT look-ups for DKIM and ARC keys (`selector._domainkey.domain`).
//!
//! [`TxtResolver`] is the seam: production uses [`StubResolver`], a small DNS client (UDP with
//! EDNS0, TCP when the answer is truncated) that asks the servers in `/etc/resolv.conf` or
//! `trust.dns_servers`; tests use [`MapResolver`], whose answers they write. Only TXT is ever
//! asked, so a full resolver library would be mostly unused weight.

use std::collections::HashMap;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// Why a name has no usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// The name does not exist or has no TXT record: a permanent answer (DKIM `permerror`).
    #[error("no TXT record at {0}")]
    NotFound(String),
    /// No answer now (time-out, SERVFAIL, unreachable server): may work later (DKIM `temperror`).
    #[error("DNS look-up of {name} failed: {reason}")]
    Temporary { name: String, reason: String },
}

pub type TxtFuture<'a> = Pin<Box<dyn Future<Output = Result<Vec<String>, DnsError>> + Send + 'a>>;

/// Answers TXT queries: each record's character-strings joined into one string.
pub trait TxtResolver: Send + Sync {
    fn txt<'a>(&'a self, name: &'a str) -> TxtFuture<'a>;
}

/// Fixed answers, for tests: names not in the map do not exist.
#[derive(Debug, Default, Clone)]
pub struct MapResolver {
    answers: HashMap<String, Result<Vec<String>, DnsError>>,
}

impl MapResolver {
    pub fn new() -> Self {
        MapResolver::default()
    }

    pub fn with_txt(mut self, name: &str, record: &str) -> Self {
        self.answers
            .insert(normalize(name), Ok(vec![record.to_owned()]));
        self
    }

    /// `name` answers with a temporary failure (as a SERVFAIL or a time-out would).
    pub fn with_failure(mut self, name: &str) -> Self {
        self.answers.insert(
            normalize(name),
            Err(DnsError::Temporary {
                name: name.to_owned(),
                reason: "SERVFAIL".into(),
            }),
        );
        self
    }
}

impl TxtResolver for MapResolver {
    fn txt<'a>(&'a self, name: &'a str) -> TxtFuture<'a> {
        let answer = self
            .answers
            .get(&normalize(name))
            .cloned()
            .unwrap_or_else(|| Err(DnsError::NotFound(name.to_owned())));
        Box::pin(async move { answer })
    }
}

fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// A stub resolver: asks recursive servers, each in turn, until one answers.
#[derive(Debug, Clone)]
pub struct StubResolver {
    servers: Vec<SocketAddr>,
    /// For one attempt at one server.
    attempt_timeout: Duration,
}

/// Largest UDP answer we ask for (the DNS flag day 2020 value): a 4096-bit key fits.
const UDP_PAYLOAD: u16 = 1232;
const TYPE_TXT: u16 = 16;
const TYPE_OPT: u16 = 41;

impl StubResolver {
    /// `servers` empty: the `nameserver` lines of `/etc/resolv.conf`. With none there either,
    /// every look-up is a temporary failure (logged once here), so mail is still taken in.
    pub fn new(servers: &[String], attempt_timeout: Duration) -> Result<Self, String> {
        let servers = if servers.is_empty() {
            let conf = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
            resolv_conf_servers(&conf)
        } else {
            servers
                .iter()
                .map(|s| {
                    parse_server(s).ok_or_else(|| format!("dns_servers: invalid server {s:?}"))
                })
                .collect::<Result<_, _>>()?
        };
        if servers.is_empty() {
            tracing::warn!("no DNS server in /etc/resolv.conf and trust.dns_servers is empty: DKIM keys cannot be looked up (temperror)");
        }
        Ok(StubResolver {
            servers,
            attempt_timeout,
        })
    }

    async fn ask(&self, server: SocketAddr, name: &str) -> Result<Vec<String>, DnsError> {
        let temporary = |reason: String| DnsError::Temporary {
            name: name.to_owned(),
            reason,
        };
        let id = query_id();
        let query = encode_query(id, name).map_err(|e| temporary(e.to_owned()))?;
        let bind: SocketAddr = if server.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = UdpSocket::bind(bind)
            .await
            .map_err(|e| temporary(e.to_string()))?;
        socket
            .connect(server)
            .await
            .map_err(|e| temporary(e.to_string()))?;
        socket
            .send(&query)
            .await
            .map_err(|e| temporary(e.to_string()))?;
        let mut buf = vec![0u8; usize::from(UDP_PAYLOAD) + 512];
        let answer = loop {
            let n = tokio::time::timeout(self.attempt_timeout, socket.recv(&mut buf))
                .await
                .map_err(|_| temporary(format!("no answer from {server}")))?
                .map_err(|e| temporary(e.to_string()))?;
            // A connected socket only hears from the server; a stray id is a late or forged reply.
            if n >= 2 && u16::from_be_bytes([buf[0], buf[1]]) == id {
                break buf[..n].to_vec();
            }
        };
        let answer = if answer.len() > 2 && answer[2] & 0x02 != 0 {
            self.ask_tcp(server, &query, name).await?
        } else {
            answer
        };
        decode_answer(&answer, id, name)
    }

    async fn ask_tcp(
        &self,
        server: SocketAddr,
        query: &[u8],
        name: &str,
    ) -> Result<Vec<u8>, DnsError> {
        let temporary = |reason: String| DnsError::Temporary {
            name: name.to_owned(),
            reason: format!("over TCP: {reason}"),
        };
        let exchange = async {
            let mut stream = TcpStream::connect(server).await?;
            let mut framed = (query.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(query);
            stream.write_all(&framed).await?;
            let mut len = [0u8; 2];
            stream.read_exact(&mut len).await?;
            let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len))];
            stream.read_exact(&mut answer).await?;
            Ok::<_, std::io::Error>(answer)
        };
        tokio::time::timeout(self.attempt_timeout, exchange)
            .await
            .map_err(|_| temporary(format!("no answer from {server}")))?
            .map_err(|e| temporary(e.to_string()))
    }
}

impl TxtResolver for StubResolver {
    fn txt<'a>(&'a self, name: &'a str) -> TxtFuture<'a> {
        Box::pin(async move {
            let mut last = None;
            for server in &self.servers {
                match self.ask(*server, name).await {
                    Err(e @ DnsError::Temporary { .. }) => last = Some(e),
                    answer => return answer,
                }
            }
            Err(last.unwrap_or_else(|| DnsError::Temporary {
                name: name.to_owned(),
                reason: "no DNS server (trust.dns_servers, /etc/resolv.conf)".into(),
            }))
        })
    }
}

fn resolv_conf_servers(conf: &str) -> Vec<SocketAddr> {
    conf.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next())
                .flatten()
                .and_then(parse_server)
        })
        .collect()
}

/// `1.2.3.4`, `1.2.3.4:5353`, `::1` or `[::1]:5353`.
fn parse_server(text: &str) -> Option<SocketAddr> {
    text.parse::<SocketAddr>().ok().or_else(|| {
        text.parse::<std::net::IpAddr>()
            .ok()
            .map(|ip| (ip, 53).into())
    })
}

/// An unpredictable query id (with the OS's random source port, what stands between a reply
/// and an off-path forgery). `RandomState` is seeded from the OS's random source.
fn query_id() -> u16 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    hasher.finish() as u16
}

fn encode_query(id: u16, name: &str) -> Result<Vec<u8>, &'static str> {
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    // Recursion desired; one question; one additional record (EDNS0's OPT).
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1]);
    for label in name.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("invalid domain name");
        }
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&TYPE_TXT.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes()); // class IN
    q.push(0); // OPT: root name
    q.extend_from_slice(&TYPE_OPT.to_be_bytes());
    q.extend_from_slice(&UDP_PAYLOAD.to_be_bytes());
    q.extend_from_slice(&[0, 0, 0, 0, 0, 0]); // extended rcode, version, flags, no options
    Ok(q)
}

/// The TXT records in an answer to our query `id`.
fn decode_answer(msg: &[u8], id: u16, name: &str) -> Result<Vec<String>, DnsError> {
    let temporary = |reason: &str| DnsError::Temporary {
        name: name.to_owned(),
        reason: reason.to_owned(),
    };
    if msg.len() < 12 || u16::from_be_bytes([msg[0], msg[1]]) != id {
        return Err(temporary("malformed answer"));
    }
    match msg[3] & 0x0f {
        0 => {}
        3 => return Err(DnsError::NotFound(name.to_owned())),
        rcode => return Err(temporary(&format!("server answered rcode {rcode}"))),
    }
    let count = |at: usize| usize::from(u16::from_be_bytes([msg[at], msg[at + 1]]));
    let (questions, answers) = (count(4), count(6));
    let mut at = 12;
    for _ in 0..questions {
        at = skip_name(msg, at).ok_or_else(|| temporary("malformed question"))? + 4;
    }
    let mut records = Vec::new();
    for _ in 0..answers {
        at = skip_name(msg, at).ok_or_else(|| temporary("malformed answer"))?;
        if at + 10 > msg.len() {
            return Err(temporary("truncated answer"));
        }
        let rtype = u16::from_be_bytes([msg[at], msg[at + 1]]);
        let len = count(at + 8);
        let data = msg
            .get(at + 10..at + 10 + len)
            .ok_or_else(|| temporary("truncated record"))?;
        at += 10 + len;
        // CNAMEs are followed by the recursive server; only the TXT data matters here.
        if rtype == TYPE_TXT {
            let mut text = Vec::new();
            let mut i = 0;
            while i < data.len() {
                let n = usize::from(data[i]);
                text.extend_from_slice(data.get(i + 1..i + 1 + n).unwrap_or_default());
                i += 1 + n;
            }
            records.push(String::from_utf8_lossy(&text).into_owned());
        }
    }
    if records.is_empty() {
        return Err(DnsError::NotFound(name.to_owned()));
    }
    Ok(records)
}

/// The offset after a (possibly compressed) name at `at`.
fn skip_name(msg: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *msg.get(at)?;
        match len {
            0 => return Some(at + 1),
            l if l & 0xc0 == 0xc0 => return Some(at + 2).filter(|&end| end <= msg.len()),
            l => at += 1 + usize::from(l),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A DNS server on 127.0.0.1 answering TXT queries from `records` (name -> record), NXDOMAIN
    /// otherwise; records longer than `udp_limit` bytes are answered truncated over UDP and in
    /// full over TCP. Serves until the test's runtime ends.
    pub(crate) async fn fake_dns_server(
        records: HashMap<String, String>,
        udp_limit: usize,
    ) -> SocketAddr {
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = udp.local_addr().unwrap();
        let tcp = tokio::net::TcpListener::bind(addr).await.unwrap();
        let records = std::sync::Arc::new(records);
        let for_udp = std::sync::Arc::clone(&records);
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            while let Ok((n, peer)) = udp.recv_from(&mut buf).await {
                let mut reply = answer_for(&buf[..n], &for_udp);
                if reply.len() > udp_limit {
                    reply.truncate(12);
                    reply[2] |= 0x02;
                    reply[6..12].fill(0);
                }
                let _ = udp.send_to(&reply, peer).await;
            }
        });
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = tcp.accept().await {
                let mut len = [0u8; 2];
                if stream.read_exact(&mut len).await.is_err() {
                    continue;
                }
                let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
                if stream.read_exact(&mut query).await.is_err() {
                    continue;
                }
                let reply = answer_for(&query, &records);
                let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
                framed.extend_from_slice(&reply);
                let _ = stream.write_all(&framed).await;
            }
        });
        addr
    }

    fn answer_for(query: &[u8], records: &HashMap<String, String>) -> Vec<u8> {
        let mut labels = Vec::new();
        let mut at = 12;
        while query[at] != 0 {
            let n = usize::from(query[at]);
            labels.push(String::from_utf8_lossy(&query[at + 1..at + 1 + n]).into_owned());
            at += 1 + n;
        }
        let question_end = at + 5;
        let name = labels.join(".");
        let mut reply = query[..question_end].to_vec();
        reply[2] = 0x81; // response, recursion desired
        reply[3] = 0x80; // recursion available
        reply[10] = 0; // no additional records
        reply[11] = 0;
        match records.get(&name) {
            Some(record) => {
                reply[7] = 1;
                reply.extend_from_slice(&[0xc0, 12]); // the question's name
                reply.extend_from_slice(&TYPE_TXT.to_be_bytes());
                reply.extend_from_slice(&[0, 1, 0, 0, 1, 0]); // IN, TTL 256
                let chunks: Vec<&[u8]> = record.as_bytes().chunks(255).collect();
                let len: usize = chunks.iter().map(|c| c.len() + 1).sum();
                reply.extend_from_slice(&(len as u16).to_be_bytes());
                for chunk in chunks {
                    reply.push(chunk.len() as u8);
                    reply.extend_from_slice(chunk);
                }
            }
            None => reply[3] |= 3,
        }
        reply
    }

    #[tokio::test]
    async fn stub_resolver_reads_txt_over_udp_and_tcp_and_reports_nxdomain() {
        let long = format!("v=DKIM1; k=rsa; p={}", "A".repeat(600));
        let server = fake_dns_server(
            HashMap::from([
                (
                    "s1._domainkey.example.com".to_owned(),
                    "v=DKIM1; p=QUJD".to_owned(),
                ),
                ("big._domainkey.example.com".to_owned(), long.clone()),
            ]),
            512,
        )
        .await;
        let resolver = StubResolver::new(&[server.to_string()], Duration::from_secs(2)).unwrap();
        assert_eq!(
            resolver.txt("s1._domainkey.example.com").await.unwrap(),
            vec!["v=DKIM1; p=QUJD".to_owned()]
        );
        // Longer than the fake's UDP limit: truncated, then asked again over TCP.
        assert_eq!(
            resolver.txt("big._domainkey.example.com.").await.unwrap(),
            vec![long]
        );
        assert_eq!(
            resolver.txt("nope._domainkey.example.com").await,
            Err(DnsError::NotFound("nope._domainkey.example.com".into()))
        );
    }

    #[tokio::test]
    async fn a_silent_server_is_a_temporary_failure() {
        // Bound but never read: queries go unanswered.
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let resolver = StubResolver::new(
            &[silent.local_addr().unwrap().to_string()],
            Duration::from_millis(100),
        )
        .unwrap();
        assert!(matches!(
            resolver.txt("s1._domainkey.example.com").await,
            Err(DnsError::Temporary { .. })
        ));
    }

    #[test]
    fn servers_from_resolv_conf() {
        let conf = "# comment\nnameserver 10.0.0.2\nsearch example.com\nnameserver ::1\n";
        assert_eq!(
            resolv_conf_servers(conf),
            vec![
                "10.0.0.2:53".parse::<SocketAddr>().unwrap(),
                "[::1]:53".parse().unwrap()
            ]
        );
    }
}
