//! Talking to the network as a user would: HTTP GET through the C-tor client's SOCKS5 port
//! (optionally isolated per username, so each request can use fresh circuits), and a minimal
//! control-port connection for `GETINFO` and friends. Blocking std I/O with explicit timeouts.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

/// Failure of a request made through the network.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// TCP connect/read/write failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The SOCKS server refused the request.
    #[error("SOCKS request to {target} refused: {reason} (reply code {code:#04x})")]
    Socks {
        /// Where the request was going.
        target: String,
        /// SOCKS5 reply code (Tor uses 0xF0–0xF7 for onion-service failures).
        code: u8,
        /// The code in words.
        reason: &'static str,
    },
    /// The peer spoke something we did not expect.
    #[error("{0}")]
    Protocol(String),
    /// The control port answered with an error.
    #[error("control port: {0}")]
    Control(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> RequestError {
    let what = what.into();
    move |source| RequestError::Io { what, source }
}

/// SOCKS5 reply codes in words, including Tor's extended onion-service codes (tor's
/// `socks_extended_error_codes`, proposal 304).
pub fn socks_reason(code: u8) -> &'static str {
    match code {
        0x01 => "general failure",
        0x02 => "not allowed by ruleset",
        0x03 => "network unreachable",
        0x04 => "host unreachable",
        0x05 => "connection refused",
        0x06 => "TTL expired (timeout)",
        0x07 => "command not supported",
        0x08 => "address type not supported",
        0xF0 => "onion service descriptor not found",
        0xF1 => "onion service descriptor invalid",
        0xF2 => "onion service introduction failed",
        0xF3 => "onion service rendezvous failed",
        0xF4 => "onion service client authorization missing",
        0xF5 => "onion service client authorization wrong",
        0xF6 => "onion address invalid",
        0xF7 => "onion service introduction timed out",
        _ => "unknown reply code",
    }
}

/// Opens a TCP stream to `host:port` through a SOCKS5 proxy. With `isolation`, the username/
/// password method is used; Tor puts streams with different credentials on different circuits.
pub fn socks5_connect(
    proxy: SocketAddr,
    host: &str,
    port: u16,
    isolation: Option<&str>,
    timeout: Duration,
) -> Result<TcpStream, RequestError> {
    let target = format!("{host}:{port}");
    let mut s = TcpStream::connect_timeout(&proxy, timeout)
        .map_err(io(format!("connect to SOCKS {proxy}")))?;
    s.set_read_timeout(Some(timeout))
        .map_err(io("set timeout"))?;
    s.set_write_timeout(Some(timeout))
        .map_err(io("set timeout"))?;
    let method = if isolation.is_some() { 2u8 } else { 0u8 };
    s.write_all(&[5, 1, method]).map_err(io("SOCKS greeting"))?;
    let mut reply = [0u8; 2];
    s.read_exact(&mut reply)
        .map_err(io("SOCKS greeting reply"))?;
    if reply != [5, method] {
        return Err(RequestError::Protocol(format!(
            "SOCKS server chose method {reply:?}"
        )));
    }
    if let Some(user) = isolation {
        let user = &user.as_bytes()[..user.len().min(255)];
        let mut msg = vec![1, user.len() as u8];
        msg.extend_from_slice(user);
        msg.extend_from_slice(&[1, b'x']);
        s.write_all(&msg).map_err(io("SOCKS auth"))?;
        s.read_exact(&mut reply).map_err(io("SOCKS auth reply"))?;
        if reply[1] != 0 {
            return Err(RequestError::Protocol(
                "SOCKS username/password refused".into(),
            ));
        }
    }
    if host.len() > 255 {
        return Err(RequestError::Protocol(format!(
            "host name too long: {} bytes",
            host.len()
        )));
    }
    let mut req = vec![5, 1, 0, 3, host.len() as u8];
    req.extend_from_slice(host.as_bytes());
    req.extend_from_slice(&port.to_be_bytes());
    s.write_all(&req).map_err(io("SOCKS connect request"))?;
    let mut head = [0u8; 4];
    s.read_exact(&mut head)
        .map_err(io(format!("SOCKS reply for {target}")))?;
    if head[1] != 0 {
        return Err(RequestError::Socks {
            target,
            code: head[1],
            reason: socks_reason(head[1]),
        });
    }
    let skip = match head[3] {
        1 => 4 + 2,
        4 => 16 + 2,
        3 => {
            let mut len = [0u8; 1];
            s.read_exact(&mut len).map_err(io("SOCKS reply"))?;
            usize::from(len[0]) + 2
        }
        t => {
            return Err(RequestError::Protocol(format!(
                "SOCKS reply address type {t}"
            )))
        }
    };
    let mut rest = vec![0u8; skip];
    s.read_exact(&mut rest).map_err(io("SOCKS reply"))?;
    Ok(s)
}

/// A whole HTTP/1.0 response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Header lines, as sent.
    pub headers: Vec<(String, String)>,
    /// The body, all of it.
    pub body: Vec<u8>,
}

/// Sends `GET path` over an open stream and reads the whole response (the server closes).
pub fn http_get_on(
    mut stream: TcpStream,
    host: &str,
    path: &str,
) -> Result<HttpResponse, RequestError> {
    let req = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(req.as_bytes())
        .map_err(io("send HTTP request"))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(io("read HTTP response"))?;
    parse_response(&raw)
}

/// GET `http://host:port/path` through a SOCKS5 proxy.
pub fn http_get_via_socks(
    proxy: SocketAddr,
    host: &str,
    port: u16,
    path: &str,
    isolation: Option<&str>,
    timeout: Duration,
) -> Result<HttpResponse, RequestError> {
    let s = socks5_connect(proxy, host, port, isolation, timeout)?;
    http_get_on(s, host, path)
}

/// Parses a complete HTTP/1.x response held in memory.
pub fn parse_response(raw: &[u8]) -> Result<HttpResponse, RequestError> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| {
            RequestError::Protocol(format!(
                "HTTP response without header end ({} bytes)",
                raw.len()
            ))
        })?;
    let head = std::str::from_utf8(&raw[..end])
        .map_err(|_| RequestError::Protocol("HTTP head not UTF-8".into()))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| RequestError::Protocol(format!("bad HTTP status line {status_line:?}")))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok(HttpResponse {
        status,
        headers,
        body: raw[end + 4..].to_vec(),
    })
}

/// A control-port connection, authenticated with the cookie.
pub struct ControlConn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl ControlConn {
    /// Connects and authenticates with the cookie file.
    pub fn connect(
        addr: SocketAddr,
        cookie_file: &Path,
        timeout: Duration,
    ) -> Result<Self, RequestError> {
        let cookie =
            std::fs::read(cookie_file).map_err(io(format!("read {}", cookie_file.display())))?;
        let s = TcpStream::connect_timeout(&addr, timeout)
            .map_err(io(format!("connect to control {addr}")))?;
        s.set_read_timeout(Some(timeout))
            .map_err(io("set timeout"))?;
        let writer = s.try_clone().map_err(io("clone control stream"))?;
        let mut c = ControlConn {
            reader: BufReader::new(s),
            writer,
        };
        let hex: String = cookie.iter().map(|b| format!("{b:02X}")).collect();
        c.command(&format!("AUTHENTICATE {hex}"))?;
        Ok(c)
    }

    /// Sends one command and returns the reply lines (without status codes) if it was `250`.
    pub fn command(&mut self, cmd: &str) -> Result<Vec<String>, RequestError> {
        self.writer
            .write_all(format!("{cmd}\r\n").as_bytes())
            .map_err(io("write control command"))?;
        let mut out = Vec::new();
        loop {
            let mut line = String::new();
            if self
                .reader
                .read_line(&mut line)
                .map_err(io("read control reply"))?
                == 0
            {
                return Err(RequestError::Control("connection closed".into()));
            }
            let line = line.trim_end_matches(['\r', '\n']).to_string();
            if line.len() < 4 {
                return Err(RequestError::Control(format!("short reply line {line:?}")));
            }
            let (code, sep, rest) = (&line[..3], &line[3..4], &line[4..]);
            if code != "250" {
                return Err(RequestError::Control(format!("{cmd:?} answered {line}")));
            }
            match sep {
                " " => {
                    out.push(rest.to_string());
                    return Ok(out);
                }
                "-" => out.push(rest.to_string()),
                "+" => {
                    // A data block: kept as one entry, byte-exact (every line ends in \n), so
                    // documents such as descriptors parse as the server sent them.
                    out.push(rest.to_string());
                    let mut data = String::new();
                    loop {
                        let mut l = String::new();
                        if self
                            .reader
                            .read_line(&mut l)
                            .map_err(io("read control data"))?
                            == 0
                        {
                            return Err(RequestError::Control("connection closed in data".into()));
                        }
                        let l = l.trim_end_matches(['\r', '\n']);
                        if l == "." {
                            break;
                        }
                        data.push_str(l.strip_prefix('.').unwrap_or(l));
                        data.push('\n');
                    }
                    out.push(data);
                }
                _ => return Err(RequestError::Control(format!("bad reply line {line:?}"))),
            }
        }
    }

    /// The next asynchronous event (after `SETEVENTS`): its text without the `650 ` code, the
    /// lines of a multi-line event joined by `\n`; an error after the read timeout.
    pub fn next_event(&mut self) -> Result<String, RequestError> {
        let mut parts = Vec::new();
        loop {
            let mut line = String::new();
            if self
                .reader
                .read_line(&mut line)
                .map_err(io("read control event"))?
                == 0
            {
                return Err(RequestError::Control("connection closed".into()));
            }
            let line = line.trim_end_matches(['\r', '\n']);
            if line.len() < 4 || &line[..3] != "650" {
                // A command reply (e.g. to SETEVENTS) arriving late: not an event.
                continue;
            }
            parts.push(line[4..].to_string());
            if &line[3..4] == " " {
                return Ok(parts.join("\n"));
            }
        }
    }

    /// `GETINFO key`: the value (a multi-line value exactly as sent, each line ending in `\n`).
    pub fn getinfo(&mut self, key: &str) -> Result<String, RequestError> {
        let lines = self.command(&format!("GETINFO {key}"))?;
        let mut value = Vec::new();
        for l in lines {
            if l == "OK" {
                continue;
            }
            match l.strip_prefix(&format!("{key}=")) {
                Some(v) if !v.is_empty() => value.push(v.to_string()),
                Some(_) => {}
                None => value.push(l),
            }
        }
        Ok(value.join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_http_responses_and_rejects_junk() {
        let r = parse_response(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi").unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.headers[0], ("Content-Length".into(), "2".into()));
        assert_eq!(r.body, b"hi");
        assert!(parse_response(b"HTTP/1.0 200 OK\r\n").is_err());
        assert!(parse_response(b"garbage\r\n\r\n").is_err());
    }

    #[test]
    fn names_tor_extended_socks_codes() {
        assert_eq!(socks_reason(0xF0), "onion service descriptor not found");
        assert_eq!(socks_reason(0x42), "unknown reply code");
    }
}
